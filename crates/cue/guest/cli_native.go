//go:build !wasip1

package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"time"
)

// main, in native builds only, is a debugging aid and the native reference of
// `cargo xtask bench-cue`; the wasm guest is built from main.go.
//
//	cue-native < request.json                  one request on stdin → response on stdout
//	cue-native -request request.json           the same, request read from a file
//	cue-native -bench 30 -request request.json Evaluate 30 times in-process, print timings
//
// With -bench the request's cacheKey is removed (unless -cached), so every
// iteration loads the module, builds it, validates #Input, fills the input and
// exports, in a fresh cue.Context: what a native Go controller that evaluates
// per request (KubeVela, Timoni) does. With -cached a fixed cacheKey is set
// instead, so iterations reuse the built module like the wasm engine's warm
// instances do.
func main() {
	bench := flag.Int("bench", 0, "evaluate the request this many times and print timings as JSON")
	warmup := flag.Int("warmup", 5, "untimed evaluations before the timed ones (with -bench)")
	requestFile := flag.String("request", "", "file holding the JSON request (default: stdin)")
	cached := flag.Bool("cached", false, "with -bench: keep the built module between iterations (fixed cacheKey)")
	flag.Parse()

	req, err := readRequest(*requestFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if *bench <= 0 {
		os.Stdout.Write(append(Evaluate(req), '\n'))
		return
	}
	if err := runBench(req, *bench, *warmup, *cached); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func readRequest(file string) ([]byte, error) {
	if file == "" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(file)
}

// BenchResult is what -bench prints: per-evaluation wall-clock times.
type BenchResult struct {
	Iterations int    `json:"iterations"`
	Warmup     int    `json:"warmup"`
	Cached     bool   `json:"cached"`
	MedianNs   int64  `json:"median_ns"`
	P90Ns      int64  `json:"p90_ns"`
	MinNs      int64  `json:"min_ns"`
	MaxNs      int64  `json:"max_ns"`
	MeanNs     int64  `json:"mean_ns"`
	GoVersion  string `json:"go_version,omitempty"`
}

func runBench(req []byte, iterations, warmup int, cached bool) error {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(req, &fields); err != nil {
		return fmt.Errorf("request is not a JSON object: %w", err)
	}
	delete(fields, "cacheKey")
	if cached {
		fields["cacheKey"] = json.RawMessage(`"cue-native-bench"`)
	}
	req, err := json.Marshal(fields)
	if err != nil {
		return err
	}

	// The first evaluation must succeed, or the timings measure an error path.
	var first map[string]json.RawMessage
	resp := Evaluate(req)
	if err := json.Unmarshal(resp, &first); err != nil {
		return fmt.Errorf("response is not JSON: %w", err)
	}
	if _, failed := first["errors"]; failed {
		return fmt.Errorf("the request fails: %s", resp)
	}
	for range warmup {
		Evaluate(req)
	}
	times := make([]int64, 0, iterations)
	for range iterations {
		started := time.Now()
		Evaluate(req)
		times = append(times, time.Since(started).Nanoseconds())
	}
	slices.Sort(times)
	var sum int64
	for _, t := range times {
		sum += t
	}
	out, err := json.Marshal(BenchResult{
		Iterations: iterations,
		Warmup:     warmup,
		Cached:     cached,
		MedianNs:   percentile(times, 50),
		P90Ns:      percentile(times, 90),
		MinNs:      times[0],
		MaxNs:      times[len(times)-1],
		MeanNs:     sum / int64(len(times)),
		GoVersion:  runtime.Version(),
	})
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(append(out, '\n'))
	return err
}

// percentile of sorted samples by nearest rank (the same definition as the
// Rust side of `cargo xtask bench-cue`).
func percentile(sorted []int64, p int) int64 {
	rank := (p*len(sorted) + 99) / 100 // ceil(p/100 * n)
	return sorted[max(rank, 1)-1]
}
