package httpretry

// Batches splits n items into consecutive [lo, hi) ranges of at most maxItems
// items and, where possible, at most maxSize total size (size(i) is item i's
// size). An item larger than maxSize goes alone in its own range: the provider
// decides what to do with it (truncate or reject). maxItems ≤ 0 means no count
// limit, maxSize ≤ 0 no size limit.
func Batches(n, maxItems, maxSize int, size func(i int) int) [][2]int {
	var out [][2]int
	lo, total := 0, 0
	for i := range n {
		s := 0
		if size != nil {
			s = size(i)
		}
		full := (maxItems > 0 && i-lo >= maxItems) || (maxSize > 0 && i > lo && total+s > maxSize)
		if full {
			out = append(out, [2]int{lo, i})
			lo, total = i, 0
		}
		total += s
	}
	if lo < n {
		out = append(out, [2]int{lo, n})
	}
	return out
}
