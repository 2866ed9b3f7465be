package broker

import (
	"context"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestPartitionsInterleave checks what the broker exists for: a consumer
// with small fetches reading a backlog sees all partitions early, not one
// partition after another.
func TestPartitionsInterleave(t *testing.T) {
	const parts, perPart = 8, 3000
	b, err := Start(Config{Addr: "127.0.0.1:0", Topic: "spans", Partitions: parts})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	prod, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	value := make([]byte, 1000)
	for i := 0; i < perPart; i++ {
		var recs []*kgo.Record
		for p := int32(0); p < parts; p++ {
			recs = append(recs, &kgo.Record{Topic: "spans", Partition: p, Value: value})
		}
		if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}

	cons, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.ConsumeTopics("spans"), kgo.ConsumerGroup("g"),
		kgo.FetchMaxBytes(64<<10), kgo.FetchMaxPartitionBytes(16<<10), kgo.FetchMaxWait(200*time.Millisecond),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	// Partitions must be read together: at no point may one partition be
	// ahead of another by more than a quarter of the backlog. Draining them
	// one after another puts the first a whole partition ahead.
	seen := make([]int, parts)
	for total := 0; total < parts*perPart; {
		fs := cons.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d records: %v", total, err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			seen[r.Partition]++
			total++
		})
		if lead := slices.Max(seen) - slices.Min(seen); lead > perPart/4 {
			t.Fatalf("after %d of %d records, per-partition counts %v: one partition leads by %d", total, parts*perPart, seen, lead)
		}
	}
}

// TestDataDirSurvivesRestart checks that records and committed offsets
// persist in DataDir.
func TestDataDirSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Addr: "127.0.0.1:0", Topic: "spans", Partitions: 2, DataDir: dir, Retention: time.Hour}
	b, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.DefaultProduceTopic("spans"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := 0; i < 10; i++ {
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(fmt.Sprint(i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	cl.Close()
	b.Close()

	b, err = Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	cons, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.ConsumeTopics("spans"), kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	n := 0
	for n < 10 {
		fs := cons.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("read %d of 10 records after restart: %v", n, err)
		}
		n += fs.NumRecords()
	}
}

func TestStartRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{Addr: "nonsense", Topic: "t"},
		{Addr: "127.0.0.1:0"},
		{Addr: "127.0.0.1:0", Topic: "t", Partitions: -1},
		{Addr: "127.0.0.1:0", Topic: "t", SASL: SASL{Mechanism: "GSSAPI"}},
	} {
		if b, err := Start(cfg); err == nil {
			b.Close()
			t.Errorf("Start(%+v) succeeded", cfg)
		}
	}
}

// TestMemberDeadInJoinIsRemoved kills a member while its JoinGroup waits
// for the group to rebalance: the broker must drop it, as Kafka does after
// its session timeout, instead of leaving it in the group with partitions
// nobody reads.
func TestMemberDeadInJoinIsRemoved(t *testing.T) {
	b, err := Start(Config{Addr: "127.0.0.1:0", Topic: "spans", Partitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const group = "g"
	live, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.ConsumeTopics("spans"), kgo.ConsumerGroup(group),
		kgo.SessionTimeout(6*time.Second), kgo.RebalanceTimeout(2*time.Second), kgo.HeartbeatInterval(300*time.Millisecond),
		kgo.FetchMaxWait(200*time.Millisecond), kgo.Balancers(kgo.RangeBalancer()))
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	go func() {
		for !live.PollFetches(context.Background()).IsClientClosed() {
		}
	}()
	adm := kadm.NewClient(live)
	waitGroup(t, adm, group, 1, 20*time.Second)

	// Another member joins and dies before its join is answered. Whether
	// kfake then starts the dead member's session timer is a coin toss
	// (its answer may still go to the closed connection's buffer); without
	// a timer, and no other member to expire and rebalance the group, it
	// would stay for good. Three rounds make a broker that keeps such
	// members fail this test seven times in eight.
	for round := range 3 {
		joinAndDie(t, b.Addr(), group)
		// Until it is dropped the dead member holds partitions; then
		// the live member is alone and owns all of them.
		waitGroup(t, adm, group, 1, 40*time.Second)
		t.Logf("round %d: the dead member was removed", round+1)
	}
}

// joinAndDie joins group as a consumer with the range balancer and closes
// its connection while the join waits for the group to rebalance.
func joinAndDie(t *testing.T, addr, group string) {
	dying, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Error(err)
		return
	}
	defer dying.Close()
	join := kmsg.NewPtrJoinGroupRequest()
	join.Group, join.ProtocolType = group, "consumer"
	join.SessionTimeoutMillis, join.RebalanceTimeoutMillis = 6000, 2000
	proto := kmsg.NewJoinGroupRequestProtocol()
	proto.Name = "range"
	meta := kmsg.NewConsumerMemberMetadata()
	meta.Topics = []string{"spans"}
	proto.Metadata = meta.AppendTo(nil)
	join.Protocols = append(join.Protocols, proto)
	resp, err := join.RequestWith(context.Background(), dying)
	if err != nil || resp.MemberID == "" {
		t.Errorf("first join: %v, member id %q", err, resp.MemberID)
		return
	}
	// The broker asks for a rejoin with the id it assigned. Send it on a
	// connection of our own and close that at once, as a process killed
	// while it waits would.
	join.MemberID = resp.MemberID
	join.SetVersion(5)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Error(err)
		return
	}
	if _, err := conn.Write(kmsg.NewRequestFormatter(kmsg.FormatterClientID("dying")).AppendRequest(nil, join, 1)); err != nil {
		t.Error(err)
	}
	time.Sleep(50 * time.Millisecond)
	conn.Close()
}

// waitGroup waits until group is stable with n members that together own
// every partition of "spans".
func waitGroup(t *testing.T, adm *kadm.Client, group string, n int, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	var state string
	for time.Now().Before(deadline) {
		gs, err := adm.DescribeGroups(context.Background(), group)
		if err == nil {
			g := gs[group]
			parts := 0
			for _, m := range g.Members {
				if c, ok := m.Assigned.AsConsumer(); ok {
					for _, tp := range c.Topics {
						parts += len(tp.Partitions)
					}
				}
			}
			state = fmt.Sprintf("%s, %d members, %d partitions assigned", g.State, len(g.Members), parts)
			if g.State == "Stable" && len(g.Members) == n && parts == 4 {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("group %s not stable with %d members owning all partitions after %v: %s", group, n, limit, state)
}
