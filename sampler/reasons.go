package sampler

// verdicts lists the (decision, reason) pairs policy p can return, for
// exporting tailsift_sampler_traces_decided_total at zero before the first
// decision. A policy of a type not listed here contributes none: its
// series appear with its first decision.
func verdicts(p Policy) []Verdict {
	switch p := p.(type) {
	case Chain:
		out := []Verdict{{Decision: Drop, Reason: "no-policy"}}
		for _, q := range p {
			out = append(out, verdicts(q)...)
		}
		return out
	case HeadSampling:
		return verdicts(p.Inner)
	case *Budget:
		out := verdicts(p.inner)
		for _, r := range budgetDropReasons {
			out = append(out, Verdict{Decision: Drop, Reason: r})
		}
		return out
	case ErrorPolicy:
		out := []Verdict{{Decision: Keep, Reason: reasonError}}
		if p.HTTP5xx {
			out = append(out, Verdict{Decision: Keep, Reason: reasonErrorHTTP})
		}
		if len(p.GRPCCodes) > 0 {
			out = append(out, Verdict{Decision: Keep, Reason: reasonErrorGRPC})
		}
		return out
	case *LatencyPolicy:
		out := []Verdict{{Decision: Keep, Reason: p.reason}}
		for _, o := range p.perService {
			out = append(out, Verdict{Decision: Keep, Reason: o.reason})
		}
		for _, o := range p.perRoute {
			out = append(out, Verdict{Decision: Keep, Reason: o.reason})
		}
		return out
	case *ProbabilisticPolicy:
		return []Verdict{{Decision: Keep, Reason: p.reason}, {Decision: Drop, Reason: "probabilistic"}}
	case *DynamicPolicy:
		return []Verdict{{Decision: Keep, Reason: reasonDynamic}, {Decision: Drop, Reason: reasonDynamic}}
	case *RulesPolicy:
		var out []Verdict
		for _, r := range p.rules {
			if r.action != ActionDrop {
				out = append(out, Verdict{Decision: Keep, Reason: r.reason})
			}
			if r.action != ActionKeep {
				out = append(out, Verdict{Decision: Drop, Reason: r.reason})
			}
		}
		return out
	}
	return nil
}

// StartAtZero exports, at zero, the decision series policy p can produce,
// so that a dashboard shows a flat line for a reason nothing has been kept
// or dropped for yet, rather than no data.
func (m *Metrics) StartAtZero(p Policy) {
	for _, v := range verdicts(p) {
		m.decided.WithLabelValues(v.Decision.String(), v.Reason)
	}
}
