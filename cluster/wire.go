package cluster

import (
	"bufio"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
)

// The peer protocol. Every message is a frame:
//
//	uint32 length (big endian) of what follows
//	byte   type
//	body
//
// A connection starts with a handshake, client (the sending node) first:
//
//	hello      client → server  version, client nonce, from node, to node
//	challenge  server → client  server nonce, server MAC (empty without a key)
//	proof      client → server  client MAC (empty without a key)
//	welcome    server → client  status, message (also sent instead of a
//	                            challenge when the server refuses at once)
//
// Handshake frames are at most maxHandshakeFrame bytes. The server checks
// that it is the node addressed only once the proof checks out.
//
// then the client sends requests and the server answers each with a receipt
// carrying the request's id, in any order:
//
//	batch      id, seq, encoding (0 raw, 1 s2 block), payload
//	ack        id, seq...
//	receipt    id, status (0 ok), message
//	decisions  id, 0, encoding, payload (sampler.AppendDecisions)
//
// Requests on one connection are handled in order. All integers are big
// endian.
const (
	frameHello byte = 1 + iota
	frameChallenge
	frameProof
	frameWelcome
	frameBatch
	frameAck
	frameReceipt
	frameDecisions
)

const (
	protoVersion = 1
	nonceLen     = 16
	// maxControlFrame bounds every frame but batches and handshakes: acks
	// and receipts. Acks are split to stay under it.
	maxControlFrame = 1 << 20
	// maxHandshakeFrame bounds the frames of the handshake, the only ones
	// read before the peer is authenticated: a hello with two node IDs of
	// 255 bytes is 529 bytes. Whoever can reach the port can send them, so
	// they are read into a fixed buffer of this size and nothing larger is
	// allocated for them.
	maxHandshakeFrame = 1024
	// maxAckSeqs is how many sequence numbers one ack frame carries.
	maxAckSeqs = (maxControlFrame - 64) / 8

	encRaw byte = 0
	encS2  byte = 1

	// batchHeaderLen is the frame header plus id, seq and encoding.
	batchHeaderLen = 4 + 1 + 8 + 8 + 1
)

// errProtocol marks a peer speaking something other than this protocol.
var errProtocol = errors.New("cluster: peer protocol violation")

// beginFrame appends a frame header of type typ with a length to be set by
// endFrame.
func beginFrame(dst []byte, typ byte) ([]byte, int) {
	return append(dst, 0, 0, 0, 0, typ), len(dst)
}

func endFrame(dst []byte, start int) []byte {
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-4))
	return dst
}

// readFrame reads one frame into buf (grown if needed) and returns its type
// and body, which aliases buf. Frames longer than limit are an error: the
// length is checked before anything is allocated.
func readFrame(r *bufio.Reader, buf []byte, limit int) (typ byte, body, newBuf []byte, err error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, buf, err
	}
	n := int(binary.BigEndian.Uint32(hdr[:4]))
	if n < 1 || n-1 > limit {
		return 0, nil, buf, fmt.Errorf("%w: frame of %d bytes (limit %d)", errProtocol, n, limit)
	}
	if cap(buf) < n-1 {
		buf = make([]byte, n-1)
	}
	body = buf[:n-1]
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, buf, err
	}
	return hdr[4], body, buf, nil
}

// appendString appends s with a one-byte length; node IDs are short.
func appendString(dst []byte, s string) []byte {
	return append(append(dst, byte(len(s))), s...)
}

func readString(b []byte) (string, []byte, bool) {
	if len(b) < 1 || len(b) < 1+int(b[0]) {
		return "", nil, false
	}
	n := int(b[0])
	return string(b[1 : 1+n]), b[1+n:], true
}

// handshakeMAC authenticates one side of the handshake. It covers both
// nonces (so neither side can replay an old exchange), both node IDs (so a
// proof for one pair of nodes is useless for another) and the side's role
// (so the server's MAC cannot be reflected back as the client's proof).
func handshakeMAC(key []byte, role string, cn, sn []byte, from, to string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(role))
	m.Write(cn)
	m.Write(sn)
	m.Write(appendString(nil, from))
	m.Write(appendString(nil, to))
	return m.Sum(nil)
}

func newNonce() []byte {
	n := make([]byte, nonceLen)
	if _, err := rand.Read(n); err != nil {
		panic("BUG: crypto/rand failed: " + err.Error())
	}
	return n
}

// clientHandshake runs the client side on a fresh connection: it proves
// this node holds key and checks that the server, which must be node to,
// does too.
func clientHandshake(c net.Conn, br *bufio.Reader, key []byte, from, to string) error {
	cn := newNonce()
	b, st := beginFrame(nil, frameHello)
	b = append(b, protoVersion)
	b = append(b, cn...)
	b = appendString(b, from)
	b = appendString(b, to)
	if _, err := c.Write(endFrame(b, st)); err != nil {
		return err
	}
	var buf [maxHandshakeFrame]byte
	typ, body, _, err := readFrame(br, buf[:0], maxHandshakeFrame)
	if err != nil {
		return err
	}
	if typ == frameWelcome {
		return welcomeErr(body)
	}
	if typ != frameChallenge || len(body) < nonceLen {
		return fmt.Errorf("%w: expected a challenge", errProtocol)
	}
	sn, smac := body[:nonceLen], body[nonceLen:]
	switch {
	case len(key) == 0 && len(smac) > 0:
		return errors.New("peer requires a shared secret key and this node has none; configure the same key on every node")
	case len(key) > 0 && len(smac) == 0:
		return errors.New("peer has no shared secret key; configure the same key on every node")
	case len(key) > 0 && !hmac.Equal(smac, handshakeMAC(key, "server", cn, sn, from, to)):
		return errors.New("peer does not hold this node's secret key; configure the same key on every node")
	}
	b, st = beginFrame(b[:0], frameProof)
	if len(key) > 0 {
		b = append(b, handshakeMAC(key, "client", cn, sn, from, to)...)
	}
	if _, err := c.Write(endFrame(b, st)); err != nil {
		return err
	}
	typ, body, _, err = readFrame(br, buf[:0], maxHandshakeFrame)
	if err != nil {
		return err
	}
	if typ != frameWelcome {
		return fmt.Errorf("%w: expected a welcome", errProtocol)
	}
	return welcomeErr(body)
}

func welcomeErr(body []byte) error {
	if len(body) < 1 {
		return fmt.Errorf("%w: empty welcome", errProtocol)
	}
	if body[0] == 0 {
		return nil
	}
	return fmt.Errorf("peer refused the connection: %s", body[1:])
}

// errRefused is a handshake the server turned down: msg is sent to the
// client, reason labels the refusal in metrics.
type errRefused struct{ reason, msg string }

func (e *errRefused) Error() string { return "refused peer: " + e.msg }

// Reasons a connection is refused, the label values of
// tailsift_cluster_refused_connections_total.
const (
	refusedTooMany     = "too_many_connections"     // past MaxConns
	refusedTooManyNew  = "too_many_unauthenticated" // past MaxPendingConns
	refusedTimeout     = "handshake_timeout"
	refusedIncomplete  = "handshake_incomplete" // the client hung up
	refusedProtocol    = "protocol"             // malformed or oversized frames
	refusedVersion     = "version"
	refusedKeyMismatch = "key_mismatch"
	refusedWrongNode   = "wrong_node"
)

// serverHandshake runs the server side and returns the authenticated (when
// key is set) node ID of the client. It allocates nothing per frame: every
// frame is read into one fixed buffer of maxHandshakeFrame bytes. Nothing
// the server says before the proof checks out names this node, so a
// caller without the key learns nothing from it.
func serverHandshake(c net.Conn, br *bufio.Reader, key []byte, self string) (string, error) {
	var buf [maxHandshakeFrame]byte
	typ, body, _, err := readFrame(br, buf[:0], maxHandshakeFrame)
	if err != nil {
		return "", err
	}
	if typ != frameHello || len(body) < 1+nonceLen {
		return "", fmt.Errorf("%w: expected a hello", errProtocol)
	}
	if body[0] != protoVersion {
		return "", refuse(c, refusedVersion, fmt.Sprintf("protocol version %d, this node speaks %d; run the same tailsift version on every node", body[0], protoVersion))
	}
	cn := append([]byte(nil), body[1:1+nonceLen]...)
	from, rest, ok1 := readString(body[1+nonceLen:])
	to, _, ok2 := readString(rest)
	if !ok1 || !ok2 || from == "" {
		return "", fmt.Errorf("%w: malformed hello", errProtocol)
	}
	sn := newNonce()
	b, st := beginFrame(nil, frameChallenge)
	b = append(b, sn...)
	if len(key) > 0 {
		b = append(b, handshakeMAC(key, "server", cn, sn, from, to)...)
	}
	if _, err := c.Write(endFrame(b, st)); err != nil {
		return "", err
	}
	typ, body, _, err = readFrame(br, buf[:0], maxHandshakeFrame)
	if err != nil {
		return "", err
	}
	if typ != frameProof {
		return "", fmt.Errorf("%w: expected a proof", errProtocol)
	}
	if len(key) > 0 && !hmac.Equal(body, handshakeMAC(key, "client", cn, sn, from, to)) {
		return "", refuse(c, refusedKeyMismatch, "secret key mismatch; configure the same key on every node")
	}
	if len(key) == 0 && len(body) > 0 {
		return "", refuse(c, refusedKeyMismatch, "this node has no secret key but the peer has one; configure the same key on every node")
	}
	if to != self {
		// The address the client resolved now belongs to another node
		// (a restart with a new ID): it must not deliver here.
		return "", refuse(c, refusedWrongNode, "the node at this address is not the one addressed (it restarted under another node ID?)")
	}
	b, st = beginFrame(b[:0], frameWelcome)
	b = append(b, 0)
	if _, err := c.Write(endFrame(b, st)); err != nil {
		return "", err
	}
	return from, nil
}

// refuse tells the client why, best effort, and returns the reason.
func refuse(c net.Conn, reason, msg string) error {
	b, st := beginFrame(nil, frameWelcome)
	b = append(b, 1)
	b = append(b, msg...)
	_, _ = c.Write(endFrame(b, st))
	return &errRefused{reason: reason, msg: msg}
}

func appendReceipt(dst []byte, id uint64, err error) []byte {
	dst, st := beginFrame(dst, frameReceipt)
	dst = binary.BigEndian.AppendUint64(dst, id)
	if err == nil {
		dst = append(dst, 0)
	} else {
		msg := err.Error()
		if len(msg) > 1024 {
			msg = msg[:1024]
		}
		dst = append(dst, 1)
		dst = append(dst, msg...)
	}
	return endFrame(dst, st)
}

func appendAck(dst []byte, id uint64, seqs []uint64) []byte {
	dst, st := beginFrame(dst, frameAck)
	dst = binary.BigEndian.AppendUint64(dst, id)
	for _, s := range seqs {
		dst = binary.BigEndian.AppendUint64(dst, s)
	}
	return endFrame(dst, st)
}
