// Copyright 2025 CUE Authors
// Licensed under the Apache License, Version 2.0.
//
// Stub injected into cuelang.org/go/internal/robustio via `go build -overlay`
// (see ../build.sh): upstream has no getFileID for wasip1. Mirrors upstream's
// robustio_js.go. The Pequod guest never touches the OS file system, so this
// is never called.

//go:build wasip1

package robustio

import (
	"errors"
	"time"
)

func getFileID(filename string) (FileID, time.Time, error) {
	return FileID{}, time.Time{}, errors.ErrUnsupported
}
