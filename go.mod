module github.com/solanyn/gpu-operator

go 1.26.0

require (
	golang.org/x/time v0.16.0
	k8s.io/utils v0.0.0-20261023123148-ca04ba58ecab
)
