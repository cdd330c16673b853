package audio

import "math"

// Resampler design: band-limited interpolation with a Kaiser-windowed sinc
// (beta 8, 16 zero crossings each side), polyphase table. The cut-off sits at
// 0.95 of the lower of the two Nyquist frequencies, so downsampling low-passes
// before decimating (no aliasing of 8-11 kHz energy into speech bands) and
// upsampling does not image.
const (
	resampleZeroCrossings = 16
	resampleKaiserBeta    = 8.0
	resampleRolloff       = 0.95
	// Phases in the coefficient table. Exact when the reduced output/input
	// ratio has a smaller numerator (every common rate pair); otherwise the
	// nearest phase is used, an error far below 16-bit quantisation for speech.
	resampleMaxPhases = 1024
)

// Resample converts p to rate with a windowed-sinc polyphase filter. It
// returns p unchanged when the rates already match or either rate is not
// positive.
func Resample(p PCM, rate int) PCM {
	if rate <= 0 || p.SampleRate <= 0 || rate == p.SampleRate {
		return p
	}
	in, out := int64(p.SampleRate), int64(rate)
	g := gcd(in, out)
	up, down := out/g, in/g // output sample n sits at input position n*down/up

	nOut := int((int64(len(p.Samples))*out + in - 1) / in)
	if len(p.Samples) == 0 {
		return PCM{SampleRate: rate, Samples: []int16{}}
	}

	cutoff := resampleRolloff * math.Min(1, float64(out)/float64(in)) // of input Nyquist
	half := int(math.Ceil(resampleZeroCrossings / cutoff))            // taps each side
	taps := 2 * half
	phases := int(min(up, resampleMaxPhases))

	// table[ph*taps+k] weights input sample base-half+1+k for fractional
	// position ph/phases between base and base+1. Rows are filled on first
	// use, so short chunks do not pay for phases they never hit.
	table := make([]float32, phases*taps)
	filled := make([]bool, phases)
	i0 := besselI0(resampleKaiserBeta)
	fill := func(ph int) []float32 {
		row := table[ph*taps : (ph+1)*taps]
		if filled[ph] {
			return row
		}
		filled[ph] = true
		frac := float64(ph) / float64(phases)
		var sum float64
		for k := range taps {
			t := float64(k-half+1) - frac // distance from the output instant, in input samples
			w := 0.0
			if r := t / float64(half); r > -1 && r < 1 {
				w = besselI0(resampleKaiserBeta*math.Sqrt(1-r*r)) / i0
			}
			v := cutoff * sinc(t*cutoff) * w
			row[k] = float32(v)
			sum += v
		}
		// Unity DC gain per phase, so phases do not ripple.
		for k := range row {
			row[k] = float32(float64(row[k]) / sum)
		}
		return row
	}

	src := p.Samples
	dst := make([]int16, nOut)
	for n := range dst {
		pos := int64(n) * down
		base := int(pos / up)
		ph := int(((pos%up)*int64(phases) + up/2) / up) // nearest phase
		if ph == phases {
			base, ph = base+1, 0
		}
		row := fill(ph)
		start := base - half + 1
		var acc float32
		if start >= 0 && start+taps <= len(src) {
			s := src[start : start+taps]
			for k, c := range row {
				acc += c * float32(s[k])
			}
		} else {
			for k, c := range row {
				if j := start + k; j >= 0 && j < len(src) {
					acc += c * float32(src[j])
				}
			}
		}
		dst[n] = clamp16(float64(acc))
	}
	return PCM{SampleRate: rate, Samples: dst}
}

func sinc(x float64) float64 {
	if x == 0 {
		return 1
	}
	return math.Sin(math.Pi*x) / (math.Pi * x)
}

// besselI0 is the zeroth-order modified Bessel function of the first kind,
// by its power series (converges fast for the arguments a Kaiser window uses).
func besselI0(x float64) float64 {
	sum, term := 1.0, 1.0
	q := x * x / 4
	for k := 1; k < 50; k++ {
		term *= q / float64(k*k)
		sum += term
		if term < sum*1e-12 {
			break
		}
	}
	return sum
}

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
