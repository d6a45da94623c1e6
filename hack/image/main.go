// Command image builds the operator's OCI image without a Docker engine or a
// base image, and pushes it.
//
//	go run ./hack/image build [-image REF] [-out bin/image]   (make image)
//	go run ./hack/image push -image REF [-from bin/image/oci] (make push)
//
// build cross-compiles a static binary (CGO_ENABLED=0, -trimpath) for each of
// linux/amd64 and linux/arm64, lays it on an empty base with a non-root user
// (65532), an entrypoint and OCI labels, and writes, under -out:
//
//	oci/                          an OCI image layout: the image index (both
//	                              architectures); `crane push --index`, skopeo
//	                              and `push` read it
//	gpu-operator.tar              the same layout as one tarball: `podman load`,
//	                              `ctr images import`, `kind load image-archive`,
//	                              `docker load` with the containerd image store
//	gpu-operator-linux-ARCH.docker.tar
//	                              one architecture in `docker save` format:
//	                              `docker load` on any Docker engine, `crane push`
//
// Timestamps come from SOURCE_DATE_EPOCH, else the commit time, so two builds
// of one commit give the same digest. push sends the index to a registry with
// the credentials of docker login, podman login or a credential helper
// (go-containerregistry's authn.DefaultKeychain).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var err error
	switch os.Args[1] {
	case "build":
		err = runBuild(ctx, os.Args[2:])
	case "push":
		err = runPush(ctx, os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: go run ./hack/image build [-image REF] [-out DIR] | push -image REF [-from DIR]")
	os.Exit(2)
}

func runBuild(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("build", flag.ExitOnError)
	o := defaultOptions()
	fs.StringVar(&o.Image, "image", o.Image, "Reference the image is named by in the tarballs (the manifests' image by default).")
	fs.StringVar(&o.Out, "out", "bin/image", "Directory the layout and tarballs are written to (replaced).")
	fs.StringVar(&o.Revision, "revision", "", "Source revision for the label and the binary (default: git HEAD, -dirty when the tree has changes).")
	fs.StringVar(&o.Epoch, "source-date-epoch", os.Getenv("SOURCE_DATE_EPOCH"), "Seconds since 1970 for every timestamp (default: $SOURCE_DATE_EPOCH, else the commit time).")
	if err := fs.Parse(args); err != nil {
		return err
	}
	start := time.Now()
	res, err := build(ctx, o)
	if err != nil {
		return err
	}
	fmt.Printf("built %s@%s in %s (revision %s, created %s)\n", res.Image, res.Digest, time.Since(start).Round(100*time.Millisecond),
		res.Revision, res.Created.UTC().Format(time.RFC3339))
	for _, p := range res.Platforms {
		fmt.Printf("  %-12s %s  %.1f MiB compressed, %.1f MiB uncompressed\n", p.Platform, p.Digest, mib(p.CompressedSize), mib(p.UncompressedSize))
	}
	fmt.Printf("wrote %s/{oci/,%s,%s}\n", o.Out, ociTarball, fmt.Sprintf(dockerTarball, "{amd64,arm64}"))
	return nil
}

func runPush(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("push", flag.ExitOnError)
	ref := fs.String("image", "", "Where to push, registry/name:tag (required).")
	from := fs.String("from", "bin/image/oci", "The OCI layout `build` wrote.")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *ref == "" {
		return fmt.Errorf("push needs -image registry/name:tag (make push IMAGE=...)")
	}
	pushed, err := push(ctx, *from, *ref)
	if err != nil {
		return err
	}
	fmt.Printf("pushed %s\n", pushed)
	return nil
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }
