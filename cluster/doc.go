// Package cluster makes several tailsift nodes act as one: it knows who is
// in the cluster (Membership, over hashicorp/memberlist gossip), which node
// owns each trace (Ring, consistent hashing with bounded loads), and moves
// span batches to owners (Transport, TCP between nodes), with the kept
// decisions a node hands to a trace's new owner after a ring change
// (SendDecisions, taken by a Handler that is also a DecisionsHandler).
//
// The router uses Ring and Transport through its own small interfaces
// (router.Ring, router.Transport). Wiring, in cmd, goes in this order
// because Transport needs Membership's addresses and Membership
// advertises Transport's:
//
//	rc := router.NewReceiver(smp, rm)
//	h := &struct{ *router.Receiver; *router.Route }{Receiver: rc}
//	var ms *cluster.Membership // Resolve runs only on Send, after Join returned
//	tr, err := cluster.NewTransport(cluster.TransportConfig{NodeID: id, ListenAddr: fwd,
//		Resolve: func(n string) (string, bool) { return ms.ForwardAddr(n) }}, h)
//	h.Route = router.NewRoute(smp, tr, rm, log) // before Serve: Acked comes through it
//	ms, err = cluster.JoinContext(ctx, cluster.Config{NodeID: id, ForwardAddr: tr.Addr(), ...},
//		func(m map[string]string) {
//			h.Route.SetRing(cluster.NewRing(id, slices.Collect(maps.Keys(m))))
//			// and tr.Forget(n) for every n that left
//		})
//	g.Go(func() error { return tr.Serve(ctx) })
//	g.Go(func() error { return rc.Run(ctx, time.Second, tr.Ack) })
//
// # What each part owns
//
// Ring is immutable; a membership change builds a new one. Membership owns
// the member map, written by memberlist's callbacks, and one notifier
// goroutine that calls onChange serially. Transport owns one outbound
// connection per peer, each with a reader goroutine for receipts, and under
// Serve one goroutine per inbound connection that reads requests, calls the
// Handler and writes receipts. Close and Shutdown join them all.
//
// # Lock order
//
// Transport.mu → peer.mu → clientConn.mu. clientConn.wmu (frame writes) is
// never held with any other. Membership has one mutex.
//
// # Security
//
// With a secret key, Membership encrypts gossip (memberlist's AES-GCM) and
// Transport refuses peers that fail an HMAC-SHA256 challenge/response.
// Transport traffic itself is not encrypted. Before a connection is
// authenticated Transport reads only handshake frames (at most
// maxHandshakeFrame bytes, into a fixed buffer) under HandshakeTimeout,
// and holds at most MaxPendingConns such connections; only then does a
// connection get its batch buffers. Without a key every caller passes, so
// cmd refuses to run a cluster without one unless told it is insecure.
package cluster
