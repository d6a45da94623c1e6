package budget

import (
	"fmt"
	"time"
)

// Month is a calendar month in UTC: budgets' monthly limits run from 00:00
// UTC on the 1st to 00:00 UTC on the 1st of the next month, whatever the
// operator's or the cluster's time zone.
type Month struct {
	Year  int
	Month time.Month
}

// MonthOf is the UTC calendar month t falls in.
func MonthOf(t time.Time) Month {
	u := t.UTC()
	return Month{Year: u.Year(), Month: u.Month()}
}

// ParseMonth reads the YYYY-MM form that String writes (status.month).
func ParseMonth(s string) (Month, error) {
	t, err := time.Parse("2006-01", s)
	if err != nil {
		return Month{}, fmt.Errorf("month %q is not YYYY-MM", s)
	}
	return MonthOf(t), nil
}

// String is YYYY-MM, the form status.month and status.monthCost.month hold.
func (m Month) String() string { return fmt.Sprintf("%04d-%02d", m.Year, int(m.Month)) }

// Start is 00:00 UTC on the month's 1st.
func (m Month) Start() time.Time { return time.Date(m.Year, m.Month, 1, 0, 0, 0, 0, time.UTC) }

// End is the next month's Start: when the month's spend starts again from zero.
func (m Month) End() time.Time { return m.Start().AddDate(0, 1, 0) }
