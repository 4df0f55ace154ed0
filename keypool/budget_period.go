package keypool

import (
	"fmt"
	"time"
)

// Period is the calendar period a client's budget covers, in UTC.
type Period uint8

// Budget periods. A week starts on Monday at 00:00 UTC (ISO 8601), a month
// on its first day at 00:00 UTC.
const (
	PeriodMonth Period = iota // also the period spend is reported for without a budget
	PeriodDay
	PeriodWeek
)

var periodNames = [...]string{"month", "day", "week"}

func (p Period) String() string {
	if int(p) < len(periodNames) {
		return periodNames[p]
	}
	return "unknown"
}

// adjective names the period in messages: "daily budget".
func (p Period) adjective() string {
	switch p {
	case PeriodDay:
		return "daily"
	case PeriodWeek:
		return "weekly"
	}
	return "monthly"
}

// ParsePeriod reads "day", "week" or "month".
func ParsePeriod(s string) (Period, error) {
	for i, n := range periodNames {
		if s == n {
			return Period(i), nil
		}
	}
	return 0, fmt.Errorf("budget period must be day, week or month, got %q", s)
}

// Start is the start of the period that holds t.
func (p Period) Start(t time.Time) time.Time {
	t = t.UTC()
	y, m, d := t.Date()
	switch p {
	case PeriodDay:
		return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
	case PeriodWeek:
		// Monday is day 0 of the week.
		back := (int(t.Weekday()) + 6) % 7
		return time.Date(y, m, d-back, 0, 0, 0, 0, time.UTC)
	}
	return time.Date(y, m, 1, 0, 0, 0, 0, time.UTC)
}

// End is the start of the period after the one that starts at start.
func (p Period) End(start time.Time) time.Time {
	switch p {
	case PeriodDay:
		return start.AddDate(0, 0, 1)
	case PeriodWeek:
		return start.AddDate(0, 0, 7)
	}
	return start.AddDate(0, 1, 0)
}
