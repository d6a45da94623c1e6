package vastai

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// SSHRun is one command a simulated VM's SSH server was asked to run.
type SSHRun struct {
	// User is the login user.
	User string
	// Key is the SHA256 fingerprint of the client's key.
	Key string
	// Command is the exec request's command line.
	Command string
	// Stdin is everything the client sent on the session's standard input
	// (the bootstrap script, for sshboot).
	Stdin string
	// Exit is the exit status the server answered.
	Exit int
	// At is when the command ended.
	At time.Time
}

// maxStdin bounds what one session may send.
const maxStdin = 4 << 20

// sshServer is one VM instance's SSH endpoint on loopback: a real SSH
// server (golang.org/x/crypto/ssh) that accepts the account's keys as they
// were when the VM was created, as root, records every exec request with
// its standard input, runs nothing, and answers exit status 0 (or what the
// test set). It refuses connections while the VM is not running.
type sshServer struct {
	ln    net.Listener
	ready func() bool // whether the VM is running now
	now   func() time.Time

	mu         sync.Mutex
	hostKey    ssh.Signer
	authorized []ssh.PublicKey
	exit       int
	runs       []SSHRun
	conns      map[net.Conn]bool
	closed     bool
	wg         sync.WaitGroup
}

func newHostKey() (ssh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return ssh.NewSignerFromKey(priv)
}

// startSSH listens on a free loopback port and serves until close.
func startSSH(authorized []ssh.PublicKey, ready func() bool, now func() time.Time) (*sshServer, error) {
	key, err := newHostKey()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &sshServer{ln: ln, ready: ready, now: now, hostKey: key, authorized: authorized, conns: map[net.Conn]bool{}}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

func (s *sshServer) port() int { return s.ln.Addr().(*net.TCPAddr).Port }

func (s *sshServer) serve() {
	defer s.wg.Done()
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			conn.Close()
			return
		}
		s.conns[conn] = true
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, conn)
				s.mu.Unlock()
				conn.Close()
			}()
			if !s.ready() {
				return // the VM is not running: nothing answers on its port
			}
			s.handle(conn)
		}()
	}
}

func (s *sshServer) config() *ssh.ServerConfig {
	s.mu.Lock()
	key, authorized := s.hostKey, s.authorized
	s.mu.Unlock()
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(meta ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
			if meta.User() != "root" {
				return nil, errors.New("only root logs in")
			}
			for _, a := range authorized {
				if string(a.Marshal()) == string(k.Marshal()) {
					return &ssh.Permissions{Extensions: map[string]string{"key": ssh.FingerprintSHA256(k)}}, nil
				}
			}
			return nil, errors.New("key not authorized on this VM")
		},
	}
	cfg.AddHostKey(key)
	return cfg
}

func (s *sshServer) handle(conn net.Conn) {
	_ = conn.SetDeadline(time.Now().Add(time.Minute))
	sc, chans, reqs, err := ssh.NewServerConn(conn, s.config())
	if err != nil {
		return
	}
	defer sc.Close()
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			_ = nc.Reject(ssh.UnknownChannelType, "only sessions")
			continue
		}
		ch, chReqs, err := nc.Accept()
		if err != nil {
			return
		}
		s.session(sc, ch, chReqs)
	}
}

// session serves one session: the first exec request is recorded and
// answered; env, pty and shell requests are refused.
func (s *sshServer) session(sc *ssh.ServerConn, ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	for req := range reqs {
		if req.Type != "exec" {
			_ = req.Reply(false, nil)
			continue
		}
		var payload struct{ Command string }
		if err := ssh.Unmarshal(req.Payload, &payload); err != nil {
			_ = req.Reply(false, nil)
			continue
		}
		_ = req.Reply(true, nil)
		stdin, _ := io.ReadAll(io.LimitReader(ch, maxStdin))
		s.mu.Lock()
		exit := s.exit
		s.runs = append(s.runs, SSHRun{User: sc.User(), Key: sc.Permissions.Extensions["key"], Command: payload.Command,
			Stdin: string(stdin), Exit: exit, At: s.now()})
		s.mu.Unlock()
		var status [4]byte
		binary.BigEndian.PutUint32(status[:], uint32(exit))
		_, _ = ch.SendRequest("exit-status", false, status[:])
		return
	}
}

// Runs returns the commands run so far.
func (s *sshServer) Runs() []SSHRun {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]SSHRun(nil), s.runs...)
}

// lastScript is the standard input of the latest command that exited 0.
func (s *sshServer) lastScript() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.runs) - 1; i >= 0; i-- {
		if s.runs[i].Exit == 0 {
			return s.runs[i].Stdin
		}
	}
	return ""
}

func (s *sshServer) setExit(status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.exit = status
}

func (s *sshServer) rotateHostKey() error {
	key, err := newHostKey()
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hostKey = key
	return nil
}

func (s *sshServer) hostPublicKey() ssh.PublicKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hostKey.PublicKey()
}

// close stops the listener and every connection and waits for them.
func (s *sshServer) close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.ln.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}
