package budget

import (
	"fmt"
	"math"
	"strconv"
)

// micros is an amount of US dollars in millionths (the precision the
// operator rounds accumulatedCost to). Sums and comparisons are done in it,
// never in float64: seven machines at $0.10/h fit a $0.70/h budget exactly.
type micros int64

// maxAmount bounds any one amount read from an object (a billion dollars),
// so a forged or corrupt status can neither overflow a sum nor, being
// negative, credit a namespace: amounts count in [0, maxAmount].
const maxAmount micros = 1_000_000_000 * 1_000_000

func toMicros(usd float64) micros {
	switch {
	case !(usd > 0): // negative, zero or NaN
		return 0
	case usd >= float64(maxAmount/1_000_000):
		return maxAmount
	}
	return micros(math.Round(usd * 1e6))
}

func (m micros) dollars() float64 { return float64(m) / 1e6 }

// add is a saturating sum.
func (m micros) add(n micros) micros {
	if n > 0 && m > math.MaxInt64-n {
		return math.MaxInt64
	}
	return m + n
}

// String prints dollars with cents, and more digits only when they matter.
func (m micros) String() string {
	if m%10_000 == 0 {
		return fmt.Sprintf("$%.2f", m.dollars())
	}
	return "$" + strconv.FormatFloat(m.dollars(), 'f', -1, 64)
}

// roundMicros rounds a dollar amount to micro-dollars, as accumulatedCost is kept.
func roundMicros(usd float64) float64 {
	return math.Round(usd*1e6) / 1e6
}
