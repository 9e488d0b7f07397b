//go:build !wasip1

package main

import (
	"fmt"
	"io"
	"os"
)

// main, in native builds only, reads one JSON request from stdin and writes
// the JSON response to stdout. It is a debugging aid; the wasm guest is built
// from main.go.
func main() {
	req, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Stdout.Write(append(Evaluate(req), '\n'))
}
