// Package sshboot delivers a VM's bootstrap over SSH, for providers whose
// create call cannot carry it (providers.DeliverOverSSH: Vast.ai's VMs
// support only the SSH launch mode, and its onstart field is documented for
// containers only: ../shared/provider-specs/vastai/virtual-machines.mdx and
// creating-instances-with-api.mdx).
//
// Run connects to an instance's SSH endpoint with the operator's key,
// checks the host key (trust on first use: the key seen on the first
// connection is returned to the caller, who keeps it; a later connection
// that presents another key is refused), and runs the bootstrap script:
// the script travels on the session's standard input, is written to a
// private temporary file and executed, so its "#!" line picks the
// interpreter, and it never appears on a command line (where other users of
// the machine could read it in the process list). Each attempt is bounded by
// a timeout; attempts that fail before the script has started (the SSH
// server is not up yet, a refused connection, a failed handshake) are
// retried a bounded number of times. Once the script has started it is never
// run again by Run: a script that exits non-zero, or whose connection breaks
// while it runs, is returned as an error for the caller to decide on (a
// bootstrap may not be safe to run twice).
//
// NewKey and LoadKey make and read the operator's key pair: an ed25519
// private key as OpenSSH PEM bytes (what the controller keeps in a Secret)
// and its public half as an authorized_keys line (what the adapter registers
// with the provider's account).
package sshboot

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/solanyn/gpu-operator/pkg/providers"
)

// Defaults for Options.
const (
	// DefaultTimeout bounds one attempt: connecting, the handshake and the
	// script's whole run.
	DefaultTimeout = 5 * time.Minute
	// DefaultAttempts is how many connections Run tries before it gives up.
	DefaultAttempts = 5
	// DefaultBackoff is the wait after the first failed attempt; it doubles
	// after each one, up to MaxBackoff.
	DefaultBackoff = 2 * time.Second
	// MaxBackoff caps the wait between attempts.
	MaxBackoff = time.Minute
	// DefaultMaxOutput caps the script output Run keeps.
	DefaultMaxOutput = 64 << 10
)

// Command is what Run asks the SSH server to execute. The script arrives on
// standard input; it is written to a file only its owner can read, run
// directly (its "#!" line picks the interpreter), and removed; the command's
// exit status is the script's.
const Command = `umask 077; f=$(mktemp /tmp/gpu-operator-bootstrap.XXXXXX) || exit 125; ` +
	`cat > "$f" && chmod 700 "$f" && "$f"; rc=$?; rm -f "$f"; exit $rc`

// Options tune Run. Zero values take the defaults.
type Options struct {
	// HostKey is the host key pinned by an earlier Run, in authorized_keys
	// format (Result.HostKey); empty trusts the key the server presents and
	// returns it in Result.HostKey, for the caller to keep.
	HostKey string
	// Timeout bounds each attempt (default DefaultTimeout).
	Timeout time.Duration
	// Attempts is the most connections tried (default DefaultAttempts).
	Attempts int
	// Backoff is the first wait between attempts (default DefaultBackoff),
	// doubling up to MaxBackoff.
	Backoff time.Duration
	// MaxOutput caps the output kept in Result.Output (default
	// DefaultMaxOutput). The output may hold secrets the script printed: it
	// is for the caller's debugging, never for status, Events or logs.
	MaxOutput int
	// Dial opens the TCP connection (default: a net.Dialer).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Result is what a Run did.
type Result struct {
	// HostKey is the server's host key, in authorized_keys format: the
	// pinned one, or the one trusted on first use. Empty when no handshake
	// got as far as the host key.
	HostKey string
	// Attempts is how many connections were tried.
	Attempts int
	// Started reports whether the script was started (it may have run even
	// when Run returns an error).
	Started bool
	// Output is the script's standard output and error, interleaved, cut
	// to MaxOutput bytes.
	Output []byte
}

// HostKeyMismatchError is a server that presented another host key than
// the pinned one: Run refuses it and does not retry.
type HostKeyMismatchError struct {
	Addr      string
	Pinned    string
	Presented string
}

func (e *HostKeyMismatchError) Error() string {
	return fmt.Sprintf("sshboot: %s presented host key %s, not the pinned %s: refusing to connect",
		e.Addr, fingerprint(e.Presented), fingerprint(e.Pinned))
}

// ExitError is a script that ran and exited with a non-zero status.
type ExitError struct {
	Status int
}

func (e *ExitError) Error() string {
	return fmt.Sprintf("sshboot: the bootstrap script exited with status %d", e.Status)
}

// ErrInterrupted is a script whose connection ended before it reported an
// exit status: it may have run in part or in full.
var ErrInterrupted = errors.New("sshboot: the connection ended while the bootstrap script ran; it may have run in part")

// ErrNotScript is a bootstrap without a "#!" first line: only scripts can be
// delivered.
var ErrNotScript = errors.New(`sshboot: the bootstrap is not a script (its first line does not start with "#!")`)

// Run runs script on the SSH server at target as target.User (root when
// empty), authenticating with signer, and returns what happened. See the
// package documentation for the host-key, timeout and retry rules.
func Run(ctx context.Context, target providers.SSHEndpoint, signer ssh.Signer, script string, o Options) (Result, error) {
	var res Result
	switch {
	case signer == nil:
		return res, errors.New("sshboot: no signer")
	case target.Host == "" || target.Port < 1 || target.Port > 65535:
		return res, fmt.Errorf("sshboot: no SSH endpoint (host %q, port %d)", target.Host, target.Port)
	case !strings.HasPrefix(script, "#!"):
		return res, ErrNotScript
	}
	if o.HostKey != "" {
		if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(o.HostKey)); err != nil {
			return res, fmt.Errorf("sshboot: the pinned host key does not parse: %w", err)
		}
	}
	timeout := orDefault(o.Timeout, DefaultTimeout)
	attempts := max(o.Attempts, 0)
	if attempts == 0 {
		attempts = DefaultAttempts
	}
	backoff := orDefault(o.Backoff, DefaultBackoff)
	maxOut := o.MaxOutput
	if maxOut <= 0 {
		maxOut = DefaultMaxOutput
	}
	dial := o.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	user := target.User
	if user == "" {
		user = "root"
	}
	addr := net.JoinHostPort(target.Host, strconv.Itoa(target.Port))
	pinned := o.HostKey

	var last error
	for res.Attempts < attempts {
		if res.Attempts > 0 {
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return res, fmt.Errorf("sshboot: %w (last attempt: %v)", ctx.Err(), last)
			case <-t.C:
			}
			backoff = min(2*backoff, MaxBackoff)
		}
		res.Attempts++
		a := attempt{addr: addr, user: user, signer: signer, pinned: pinned, timeout: timeout, dial: dial, maxOut: maxOut}
		err := a.run(ctx, script)
		if a.seenKey != "" {
			res.HostKey = a.seenKey
		}
		res.Started = res.Started || a.started
		res.Output = a.out.Bytes()
		if err == nil {
			return res, nil
		}
		var mismatch *HostKeyMismatchError
		if a.started || errors.As(err, &mismatch) || ctx.Err() != nil {
			return res, err
		}
		last = err
	}
	return res, fmt.Errorf("sshboot: %s: gave up after %d attempts: %w", addr, res.Attempts, last)
}

// attempt is one connection.
type attempt struct {
	addr, user string
	signer     ssh.Signer
	pinned     string
	timeout    time.Duration
	dial       func(ctx context.Context, network, addr string) (net.Conn, error)
	maxOut     int

	seenKey string
	started bool
	out     cappedBuffer
}

func (a *attempt) run(ctx context.Context, script string) error {
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	conn, err := a.dial(ctx, "tcp", a.addr)
	if err != nil {
		return fmt.Errorf("sshboot: connecting to %s: %w", a.addr, err)
	}
	defer conn.Close()
	// The deadline bounds the handshake and every read and write after it;
	// a cancelled context closes the connection at once.
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	cfg := &ssh.ClientConfig{
		User:            a.user,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(a.signer)},
		HostKeyCallback: a.checkHostKey,
		Timeout:         a.timeout,
	}
	c, chans, reqs, err := ssh.NewClientConn(conn, a.addr, cfg)
	if err != nil {
		var mismatch *HostKeyMismatchError
		if errors.As(err, &mismatch) {
			return mismatch
		}
		return fmt.Errorf("sshboot: SSH handshake with %s: %w", a.addr, err)
	}
	client := ssh.NewClient(c, chans, reqs)
	defer client.Close()
	session, err := client.NewSession()
	if err != nil {
		return fmt.Errorf("sshboot: opening a session on %s: %w", a.addr, err)
	}
	defer session.Close()
	a.out.limit = a.maxOut
	session.Stdout = &a.out
	session.Stderr = &a.out
	session.Stdin = strings.NewReader(script)
	if err := session.Start(Command); err != nil {
		return fmt.Errorf("sshboot: starting the bootstrap on %s: %w", a.addr, err)
	}
	a.started = true
	err = session.Wait()
	var exit *ssh.ExitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &exit):
		return &ExitError{Status: exit.ExitStatus()}
	default:
		// No exit status (ssh.ExitMissingError), a broken connection or the
		// timeout: the script may have run.
		return fmt.Errorf("%w: %v", ErrInterrupted, err)
	}
}

// checkHostKey pins the server's host key: a first connection (nothing
// pinned) trusts and records it; a pinned key must match exactly.
func (a *attempt) checkHostKey(_ string, _ net.Addr, key ssh.PublicKey) error {
	presented := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(key)))
	a.seenKey = presented
	if a.pinned == "" {
		return nil
	}
	want, _, _, _, err := ssh.ParseAuthorizedKey([]byte(a.pinned))
	if err != nil {
		return err
	}
	if !bytes.Equal(want.Marshal(), key.Marshal()) {
		a.seenKey = a.pinned // the pin stays what it was
		return &HostKeyMismatchError{Addr: a.addr, Pinned: a.pinned, Presented: presented}
	}
	return nil
}

// NewKey generates an ed25519 key pair: the private key as OpenSSH PEM
// ("OPENSSH PRIVATE KEY"), unencrypted, for a Secret, and the public key
// as an authorized_keys line ending in comment (when not empty), for the
// provider's account.
func NewKey(comment string) (privatePEM []byte, authorizedKey string, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, "", err
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return nil, "", err
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, "", err
	}
	return pem.EncodeToMemory(block), authorizedLine(sshPub, comment), nil
}

// LoadKey reads a private key in PEM (NewKey's output, or any unencrypted
// key golang.org/x/crypto/ssh parses) and returns its signer and its public
// key as an authorized_keys line ending in comment (when not empty).
func LoadKey(privatePEM []byte, comment string) (ssh.Signer, string, error) {
	signer, err := ssh.ParsePrivateKey(privatePEM)
	if err != nil {
		return nil, "", fmt.Errorf("sshboot: reading the private key: %w", err)
	}
	return signer, authorizedLine(signer.PublicKey(), comment), nil
}

// SameKey reports whether two authorized_keys lines hold the same key,
// whatever their comments.
func SameKey(a, b string) bool {
	ka, _, _, _, errA := ssh.ParseAuthorizedKey([]byte(a))
	kb, _, _, _, errB := ssh.ParseAuthorizedKey([]byte(b))
	return errA == nil && errB == nil && bytes.Equal(ka.Marshal(), kb.Marshal())
}

func authorizedLine(k ssh.PublicKey, comment string) string {
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
	if comment = strings.TrimSpace(comment); comment != "" {
		line += " " + comment
	}
	return line
}

// fingerprint is a key's SHA256 fingerprint, or the line itself when it
// does not parse.
func fingerprint(line string) string {
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		return strconv.Quote(line)
	}
	return ssh.FingerprintSHA256(k)
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// cappedBuffer keeps the first limit bytes written to it and drops the
// rest, accepting every write (the session's output must keep flowing).
type cappedBuffer struct {
	mu    sync.Mutex
	limit int
	buf   bytes.Buffer
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.limit - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func (b *cappedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

var _ io.Writer = (*cappedBuffer)(nil)
