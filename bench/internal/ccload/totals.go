package ccload

// Totals counts a client's results by outcome.
type Totals struct {
	Reqs, OK, Relay429, Up429, GaveUp, Abandoned, Errs, Other int
	SonnetBytes                                               int64
}

// Tally counts rs: Relay429, Up429 and Other count attempts; the others
// count requests by their final outcome.
func Tally(rs []*Result) Totals {
	var t Totals
	for _, r := range rs {
		t.Reqs++
		t.Relay429 += r.Relay429
		t.Up429 += r.Up429
		t.Other += r.Other
		if r.Class == "sonnet" {
			t.SonnetBytes += int64(r.Bytes)
		}
		switch {
		case r.OK():
			t.OK++
		case r.Abandon:
			t.Abandoned++
		case r.Status == 0:
			t.Errs++
		case r.Status == 429:
			t.GaveUp++
		default:
			t.Errs++
		}
	}
	return t
}

// OrgLimits sums the organizations' limits.
func OrgLimits(orgs []Org) (rpm, itpm, otpm int64) {
	for _, o := range orgs {
		rpm += o.RPM
		itpm += o.ITPM
		otpm += o.OTPM
	}
	return
}
