package broker

import (
	"context"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// reaper removes consumer-group members that died while the group was
// rebalancing.
//
// kfake starts a member's session timer only when a JoinGroup or SyncGroup
// answer reaches it. A member killed while its JoinGroup waits never gets
// the answer, so it never gets a timer; once the leader's SyncGroup makes
// the group stable, the member stays in it for good, holding partitions
// nobody reads. Apache Kafka expires such a member after its session
// timeout. The reaper watches group requests, and asks the broker to remove
// (LeaveGroup on its behalf) a member not heard from for longer than its
// rebalance timeout plus its session timeout: the longest a live member can
// stay silent (waiting in a join, then between heartbeats). Members that
// expire normally are removed by kfake first; the reaper's LeaveGroup for
// them is answered with an unknown-member error and ignored.
type reaper struct {
	cl *kgo.Client

	mu      sync.Mutex
	members map[memberKey]*memberSeen
}

type memberKey struct{ group, member string }

type memberSeen struct {
	last               time.Time
	rebalance, session time.Duration // from its JoinGroup
}

// Members seen before their JoinGroup get Kafka clients' defaults.
const (
	defaultRebalance = 60 * time.Second
	defaultSession   = 45 * time.Second
)

// watch registers controls that observe (never handle) the group requests
// of c.
func (r *reaper) watch(c *kfake.Cluster) {
	for _, key := range []kmsg.Key{kmsg.JoinGroup, kmsg.SyncGroup, kmsg.Heartbeat, kmsg.OffsetCommit, kmsg.LeaveGroup} {
		c.ControlKey(int16(key), func(req kmsg.Request) (kmsg.Response, error, bool) {
			c.KeepControl()
			r.observe(req, time.Now())
			return nil, nil, false
		})
	}
}

func (r *reaper) observe(req kmsg.Request, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := func(group, member string) *memberSeen {
		if member == "" {
			return nil
		}
		k := memberKey{group, member}
		m := r.members[k]
		if m == nil {
			m = &memberSeen{rebalance: defaultRebalance, session: defaultSession}
			r.members[k] = m
		}
		m.last = now
		return m
	}
	switch req := req.(type) {
	case *kmsg.JoinGroupRequest:
		if m := seen(req.Group, req.MemberID); m != nil {
			m.rebalance = time.Duration(req.RebalanceTimeoutMillis) * time.Millisecond
			m.session = time.Duration(req.SessionTimeoutMillis) * time.Millisecond
		}
	case *kmsg.SyncGroupRequest:
		seen(req.Group, req.MemberID)
		// The leader names every member it assigns to; a member known
		// only from here starts its clock now.
		for _, a := range req.GroupAssignment {
			if _, ok := r.members[memberKey{req.Group, a.MemberID}]; !ok {
				seen(req.Group, a.MemberID)
			}
		}
	case *kmsg.HeartbeatRequest:
		seen(req.Group, req.MemberID)
	case *kmsg.OffsetCommitRequest:
		seen(req.Group, req.MemberID)
	case *kmsg.LeaveGroupRequest:
		delete(r.members, memberKey{req.Group, req.MemberID})
		for _, m := range req.Members {
			delete(r.members, memberKey{req.Group, m.MemberID})
		}
	}
}

// silent returns, and forgets, the members silent at now for longer than a
// live one can be: a join waits at most the group's longest rebalance
// timeout, and heartbeats come within a session timeout.
func (r *reaper) silent(now time.Time) []memberKey {
	r.mu.Lock()
	defer r.mu.Unlock()
	rebalance := map[string]time.Duration{}
	for k, m := range r.members {
		rebalance[k.group] = max(rebalance[k.group], m.rebalance, m.session)
	}
	var out []memberKey
	for k, m := range r.members {
		if now.Sub(m.last) > rebalance[k.group]+m.session {
			out = append(out, k)
			delete(r.members, k)
		}
	}
	return out
}

// run removes silent members every interval until ctx ends.
func (r *reaper) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for _, k := range r.silent(now) {
				req := kmsg.NewPtrLeaveGroupRequest()
				req.Group = k.group
				m := kmsg.NewLeaveGroupRequestMember()
				m.MemberID = k.member
				req.Members = append(req.Members, m)
				rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, _ = req.RequestWith(rctx, r.cl) // unknown member: kfake expired it already
				cancel()
			}
		}
	}
}
