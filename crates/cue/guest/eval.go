// Pure evaluation logic of the Pequod CUE guest. This file carries no build
// tags: it compiles for wasip1 (see main.go) and natively (for `go test` and
// the debugging CLI in cli_native.go).

package main

import (
	"bytes"
	"container/list"
	"context"
	"encoding/json"
	stderrors "errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing/fstest"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/build"
	"cuelang.org/go/cue/cuecontext"
	cueerrors "cuelang.org/go/cue/errors"
	"cuelang.org/go/cue/load"
	"cuelang.org/go/cue/token"
	cuejson "cuelang.org/go/encoding/json"
	"cuelang.org/go/mod/modfile"
	"cuelang.org/go/mod/modregistry"
	"cuelang.org/go/mod/module"
)

// Phases reported in Error.Phase.
const (
	PhaseInput  = "input"  // malformed request (bad JSON, input not an object, bad file paths, bad deps)
	PhaseLoad   = "load"   // loading/parsing the CUE package and its imports failed
	PhaseSchema = "schema" // the input does not satisfy #Input
	PhaseEval   = "eval"   // evaluation failed (conflicts, failed constraints, missing graph, guest panic)
	PhaseExport = "export" // graph/outputs/violations are not concrete or cannot be exported as JSON
)

const (
	// Virtual file system layout. The module under evaluation is mounted at
	// modMount, each dependency at depMount/<module base path>@<version>.
	modMount = "/mod"
	depMount = "/cue-modules"

	// inputFile is the file name given to the input JSON when compiling it;
	// positions inside it are dropped from the reported errors since they
	// refer to the serialized request, not to anything a user wrote.
	inputFile = "pequod:input.json"

	// cacheSize is the maximum number of built module values kept by cacheKey.
	cacheSize = 8

	// maxErrors bounds the number of error entries in one response.
	maxErrors = 100
)

// Request is the JSON request accepted by Evaluate.
type Request struct {
	// Files of the module, keyed by slash-separated path relative to the
	// module root (e.g. "cue.mod/module.cue", "webservice.cue", "sub/x.cue").
	Files map[string]string `json:"files"`
	// Package is the package directory relative to the module root ("." by
	// default). An optional ":name" qualifier selects one package when a
	// directory holds several (e.g. "sub:foo").
	Package string `json:"package,omitempty"`
	// Input is the user's input; it must be a JSON object.
	Input json.RawMessage `json:"input"`
	// Deps are the dependency modules already fetched by the host.
	Deps []Dep `json:"deps,omitempty"`
	// CacheKey, when set, identifies the exact (files, package, deps)
	// combination; the built module value is cached under it.
	CacheKey string `json:"cacheKey,omitempty"`
}

// Dep is one dependency module.
type Dep struct {
	// Module is the module path, with or without major version suffix
	// (e.g. "example.com/policy@v0").
	Module string `json:"module"`
	// Version is the exact canonical semver version (e.g. "v0.1.0").
	Version string `json:"version"`
	// Files of the module relative to its root; must include cue.mod/module.cue.
	Files map[string]string `json:"files"`
}

// Success is the JSON response on success.
type Success struct {
	Graph      json.RawMessage `json:"graph"`
	Outputs    json.RawMessage `json:"outputs"`
	Violations json.RawMessage `json:"violations"`
}

// Failure is the JSON response on failure.
type Failure struct {
	Errors []Error `json:"errors"`
}

// Error is one structured error.
type Error struct {
	Phase      string     `json:"phase"`
	Path       string     `json:"path"`
	Message    string     `json:"message"`
	Positions  []Position `json:"positions"`
	Incomplete bool       `json:"incomplete"`
}

// Position is a source position. File is relative to the module root for
// files of the module under evaluation, and "<module>@<version>/<file>" for
// files of a dependency module.
type Position struct {
	File   string `json:"file"`
	Line   int    `json:"line"`
	Column int    `json:"column"`
}

// evalMu serializes evaluations: cue.Context values are not safe for
// concurrent use and the cache shares them between requests. (The wasm guest
// is single-threaded anyway.)
var evalMu sync.Mutex

// Evaluate handles one JSON request and returns the JSON response. It never
// panics.
func Evaluate(reqJSON []byte) (resp []byte) {
	evalMu.Lock()
	defer evalMu.Unlock()

	var cacheKey string
	defer func() {
		if r := recover(); r != nil {
			// A panic may have left a cached context in a bad state.
			if cacheKey != "" {
				moduleCache.remove(cacheKey)
			}
			resp = marshalResponse(nil, []Error{{
				Phase:   PhaseEval,
				Message: fmt.Sprintf("guest panic: %v", r),
			}})
		}
	}()

	var req Request
	if errs := parseRequest(reqJSON, &req); errs != nil {
		return marshalResponse(nil, errs)
	}
	cacheKey = req.CacheKey
	ok, errs := evaluate(&req)
	return marshalResponse(ok, errs)
}

func marshalResponse(ok *Success, errs []Error) []byte {
	var v any
	if errs != nil {
		for i := range errs {
			if errs[i].Positions == nil {
				errs[i].Positions = []Position{}
			}
		}
		v = Failure{Errors: errs}
	} else {
		v = ok
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Cannot happen with the types above; answer with something valid anyway.
		b, _ := json.Marshal(Failure{Errors: []Error{{
			Phase: PhaseEval, Message: "cannot encode response: " + err.Error(), Positions: []Position{},
		}}})
		return b
	}
	return bytes.TrimRight(buf.Bytes(), "\n")
}

func inputError(path, format string, args ...any) []Error {
	return []Error{{Phase: PhaseInput, Path: path, Message: fmt.Sprintf(format, args...)}}
}

func parseRequest(data []byte, req *Request) []Error {
	if err := json.Unmarshal(data, req); err != nil {
		return inputError("", "malformed request JSON: %v", err)
	}
	in := bytes.TrimSpace(req.Input)
	if len(in) == 0 || in[0] != '{' {
		kind := "missing"
		if len(in) > 0 {
			kind = jsonKind(in)
		}
		return inputError("input", "input must be a JSON object, got %s", kind)
	}
	req.Input = in
	if len(req.Files) == 0 && req.CacheKey == "" {
		return inputError("files", "request has no files")
	}
	for name := range req.Files {
		if !validFilePath(name) {
			return inputError("files", "invalid file path %q: must be a clean relative slash-separated path", name)
		}
	}
	if req.Package == "" {
		req.Package = "."
	}
	dir, _, _ := strings.Cut(req.Package, ":")
	if dir != "." && !validFilePath(dir) {
		return inputError("package", "invalid package directory %q: must be \".\" or a clean relative path", dir)
	}
	for i, d := range req.Deps {
		if _, err := module.NewVersion(d.Module, d.Version); err != nil {
			return inputError(fmt.Sprintf("deps.%d", i), "invalid dependency: %v", err)
		}
		for name := range d.Files {
			if !validFilePath(name) {
				return inputError(fmt.Sprintf("deps.%d", i), "invalid file path %q in dependency %s", name, d.Module)
			}
		}
	}
	return nil
}

func jsonKind(b []byte) string {
	switch b[0] {
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	default:
		return "a number"
	}
}

func validFilePath(name string) bool {
	return name != "." && fs.ValidPath(name) && !strings.Contains(name, "\\")
}

// builtModule is a loaded and built (not yet filled) module value together
// with the context that owns it.
type builtModule struct {
	ctx *cue.Context
	val cue.Value
}

func evaluate(req *Request) (*Success, []Error) {
	var mod *builtModule
	if req.CacheKey != "" {
		mod = moduleCache.get(req.CacheKey)
	}
	if mod == nil {
		if len(req.Files) == 0 {
			return nil, inputError("files", "request has no files and cacheKey %q is not cached", req.CacheKey)
		}
		var errs []Error
		mod, errs = loadAndBuild(req)
		if errs != nil {
			return nil, errs
		}
		if req.CacheKey != "" {
			moduleCache.put(req.CacheKey, mod)
		}
	}
	return fillAndExport(mod, req.Input)
}

// loadAndBuild loads the package from an in-memory file system and builds it
// in a fresh cue.Context.
func loadAndBuild(req *Request) (*builtModule, []Error) {
	fsys := fstest.MapFS{}
	for name, content := range req.Files {
		fsys[modMount[1:]+"/"+name] = &fstest.MapFile{Data: []byte(content), Mode: 0o444}
	}
	reg := &memRegistry{fsys: fsys, deps: map[module.Version]string{}}
	for _, d := range req.Deps {
		mv, _ := module.NewVersion(d.Module, d.Version) // validated in parseRequest
		root := depMount + "/" + mv.String()
		reg.deps[mv] = root
		for name, content := range d.Files {
			fsys[root[1:]+"/"+name] = &fstest.MapFile{Data: []byte(content), Mode: 0o444}
		}
	}

	dir, qual, hasQual := strings.Cut(req.Package, ":")
	if !hasCUEFiles(req.Files, dir) {
		return nil, []Error{{
			Phase:   PhaseLoad,
			Path:    "package",
			Message: fmt.Sprintf("package directory %q contains no .cue files", dir),
		}}
	}
	arg := "."
	if hasQual {
		arg = ".:" + qual
	}
	cfg := &load.Config{
		FS:         fsys,
		Dir:        path.Join(modMount, dir),
		FromFSPath: displayPath,
		Registry:   reg,
		Env:        []string{},
	}
	insts := load.Instances([]string{arg}, cfg)
	if len(insts) != 1 {
		return nil, []Error{{Phase: PhaseLoad, Message: fmt.Sprintf("expected one package instance, got %d", len(insts))}}
	}
	inst := insts[0]
	if inst.Err != nil {
		return nil, convertErrors(PhaseLoad, inst.Err, nil)
	}
	if errs := instanceErrors(inst); errs != nil {
		return nil, errs
	}
	ctx := cuecontext.New()
	v := ctx.BuildInstance(inst)
	if err := v.Err(); err != nil {
		return nil, convertErrors(PhaseEval, err, nil)
	}
	return &builtModule{ctx: ctx, val: v}, nil
}

func hasCUEFiles(files map[string]string, dir string) bool {
	for name := range files {
		if strings.HasSuffix(name, ".cue") && path.Dir(name) == dir {
			return true
		}
	}
	return false
}

// instanceErrors reports errors of imported instances, which BuildInstance
// would otherwise report with less context.
func instanceErrors(inst *build.Instance) []Error {
	var errs []Error
	for _, imp := range inst.Imports {
		if imp.Err != nil {
			errs = append(errs, convertErrors(PhaseLoad, imp.Err, nil)...)
		}
	}
	return errs
}

// fillAndExport validates the input against #Input, fills it into `input`
// and exports graph, outputs and violations.
func fillAndExport(mod *builtModule, input []byte) (*Success, []Error) {
	expr, err := cuejson.Extract(inputFile, input)
	if err != nil {
		return nil, convertErrors(PhaseInput, err, nil)
	}
	in := mod.ctx.BuildExpr(expr)
	if err := in.Err(); err != nil {
		return nil, convertErrors(PhaseInput, err, nil)
	}

	// 1. Schema: #Input & input. Non-concrete errors first (conflicts,
	// bounds, disallowed fields), then incompleteness (missing required
	// input fields).
	if schema := mod.val.LookupPath(cue.MakePath(cue.Def("Input"))); schema.Exists() {
		checked := schema.Unify(in)
		if err := checked.Validate(); err != nil {
			return nil, schemaErrors(schema, err, false)
		}
		if err := checked.Validate(cue.Concrete(true)); err != nil {
			return nil, schemaErrors(schema, err, true)
		}
	}

	// 2. Fill and evaluate.
	v := mod.val.FillPath(cue.MakePath(cue.Str("input")), in)
	if err := v.Validate(); err != nil {
		return nil, convertErrors(PhaseEval, err, nil)
	}

	graph := v.LookupPath(cue.MakePath(cue.Str("graph")))
	if !graph.Exists() {
		return nil, []Error{{
			Phase:   PhaseEval,
			Path:    "graph",
			Message: "the module does not define a top-level `graph` field",
		}}
	}
	outputs := v.LookupPath(cue.MakePath(cue.Str("outputs")))
	violations := v.LookupPath(cue.MakePath(cue.Str("violations")))
	if violations.Exists() {
		if k := violations.IncompleteKind(); k&cue.ListKind == 0 {
			return nil, []Error{{
				Phase:     PhaseEval,
				Path:      "violations",
				Message:   fmt.Sprintf("violations must be a list, got %v", k),
				Positions: positions(violations.Pos()),
			}}
		}
	}

	// 3. Export. Exporting fails on any non-concrete value, so the success path
	// walks each field once; only on failure is it validated again for errors
	// with paths, positions and the incomplete flag.
	res := &Success{}
	exported := true
	for _, f := range []struct {
		v   cue.Value
		dst *json.RawMessage
	}{{graph, &res.Graph}, {outputs, &res.Outputs}, {violations, &res.Violations}} {
		if !f.v.Exists() {
			continue
		}
		b, err := f.v.MarshalJSON()
		if err != nil {
			exported = false
			break
		}
		*f.dst = b
	}
	if exported {
		return res, nil
	}

	// 4. Concreteness of the exported fields, for the error report.
	var errs []Error
	for _, f := range []cue.Value{graph, outputs, violations} {
		if !f.Exists() {
			continue
		}
		if err := f.Validate(cue.Concrete(true)); err != nil {
			errs = append(errs, convertErrors(PhaseExport, err, nil)...)
		}
	}
	if errs != nil {
		markIncomplete(errs)
		return nil, capErrors(errs)
	}
	// Validation found nothing, yet export failed: report the export errors.
	for _, f := range []cue.Value{graph, outputs, violations} {
		if !f.Exists() {
			continue
		}
		if _, err := f.MarshalJSON(); err != nil {
			errs = append(errs, convertErrors(PhaseExport, err, nil)...)
		}
	}
	return nil, capErrors(errs)
}

// schemaErrors converts errors of #Input & input. Paths are rewritten to read
// as input paths. Errors whose only positions are in the input JSON (e.g.
// "field not allowed") get the position of the closest enclosing #Input
// field instead, so that every schema error points into the module.
func schemaErrors(schema cue.Value, err error, incomplete bool) []Error {
	errs := convertErrors(PhaseSchema, err, schemaPath)
	for i := range errs {
		errs[i].Incomplete = incomplete
		if len(errs[i].Positions) > 0 || errs[i].Path == "" {
			continue
		}
		if strings.HasSuffix(errs[i].Message, "errors in empty disjunction:") {
			continue // header entry; the branch entries carry positions
		}
		// Longest prefix of the path (below "input") that exists in #Input.
		var sels []cue.Selector
		for _, elem := range strings.Split(errs[i].Path, ".")[1:] {
			sel, ok := selectorOf(elem)
			if !ok {
				break
			}
			sels = append(sels, sel)
		}
		for n := len(sels); n >= 0; n-- {
			if f := schema.LookupPath(cue.MakePath(sels[:n]...)); f.Exists() {
				if ps := positions(f.Pos()); len(ps) > 0 {
					errs[i].Positions = ps
					break
				}
			}
		}
	}
	return errs
}

// selectorOf parses one element of an error path.
func selectorOf(elem string) (cue.Selector, bool) {
	if n, err := strconv.Atoi(elem); err == nil && n >= 0 {
		return cue.Index(n), true
	}
	p := cue.ParsePath(elem)
	if p.Err() != nil || len(p.Selectors()) != 1 {
		return cue.Selector{}, false
	}
	return p.Selectors()[0], true
}

func markIncomplete(errs []Error) {
	for i := range errs {
		errs[i].Incomplete = true
	}
}

// schemaPath rewrites the path of an error found while checking #Input & input
// so that it reads as a path into the input: "#Input.replicas" and
// "replicas" both become "input.replicas".
func schemaPath(p []string) []string {
	if len(p) > 0 && p[0] == "#Input" {
		p = p[1:]
	}
	if len(p) > 0 && p[0] == "input" {
		return p
	}
	return append([]string{"input"}, p...)
}

// convertErrors flattens a CUE error into structured entries. A failed
// disjunction yields a header entry plus one entry per branch.
func convertErrors(phase string, err error, rewritePath func([]string) []string) []Error {
	var out []Error
	for _, e := range cueerrors.Errors(err) {
		p := e.Path()
		if rewritePath != nil {
			p = rewritePath(slices.Clone(p))
		}
		out = append(out, Error{
			Phase:     phase,
			Path:      strings.Join(p, "."),
			Message:   message(e),
			Positions: positions(cueerrors.Positions(e)...),
		})
	}
	if len(out) == 0 {
		out = []Error{{Phase: phase, Message: err.Error()}}
	}
	out = dedupe(out)
	return capErrors(out)
}

// message formats e.Msg(). For wrapped errors (e.g. "import failed" around
// "cannot find package ..."), the messages of the wrapped errors are
// appended, separated by ": ", without their positions.
func message(e cueerrors.Error) string {
	msg := formatMsg(e)
	for err := stderrors.Unwrap(e); err != nil; err = stderrors.Unwrap(err) {
		var part string
		if ce, ok := err.(cueerrors.Error); ok {
			part = formatMsg(ce)
		} else {
			part = err.Error() // includes the rest of the chain
		}
		if part != "" && !strings.Contains(msg, part) {
			msg += ": " + part
		}
		if _, ok := err.(cueerrors.Error); !ok {
			break
		}
	}
	return msg
}

func formatMsg(e cueerrors.Error) string {
	format, args := e.Msg()
	if len(args) == 0 {
		return format
	}
	return fmt.Sprintf(format, args...)
}

// dedupe drops exact duplicates (CUE may report one failure once per
// reference to the failing value).
func dedupe(errs []Error) []Error {
	out := errs[:0]
	for _, e := range errs {
		if !slices.ContainsFunc(out, func(o Error) bool {
			return o.Phase == e.Phase && o.Path == e.Path && o.Message == e.Message &&
				o.Incomplete == e.Incomplete && slices.Equal(o.Positions, e.Positions)
		}) {
			out = append(out, e)
		}
	}
	return out
}

func capErrors(errs []Error) []Error {
	if len(errs) <= maxErrors {
		return errs
	}
	n := len(errs) - maxErrors
	errs = append(errs[:maxErrors:maxErrors], Error{
		Phase:      errs[0].Phase,
		Message:    fmt.Sprintf("%d more errors omitted", n),
		Incomplete: errs[0].Incomplete,
	})
	return errs
}

func positions(ps ...token.Pos) []Position {
	out := []Position{}
	for _, p := range ps {
		if !p.IsValid() {
			continue
		}
		file := p.Filename()
		if file == inputFile || file == "" {
			continue
		}
		pos := Position{File: displayPath(file), Line: p.Line(), Column: p.Column()}
		if !slices.Contains(out, pos) {
			out = append(out, pos)
		}
	}
	return out
}

// displayPath maps a path inside the virtual file system to the name shown in
// positions: relative to the module root for the module's own files,
// "<module>@<version>/..." for dependency files. It is idempotent.
func displayPath(p string) string {
	switch {
	case p == modMount:
		return "."
	case strings.HasPrefix(p, modMount+"/"):
		return p[len(modMount)+1:]
	case strings.HasPrefix(p, depMount+"/"):
		return p[len(depMount)+1:]
	}
	return p
}

// memRegistry serves the dependency modules supplied in the request. Each
// dependency lives inside the load.Config.FS at depMount/<module>@<version>;
// Fetch returns a sub-FS that implements module.OSRootFS with that root, as
// the loader requires for dependencies when Config.FS is set.
type memRegistry struct {
	fsys fs.FS
	deps map[module.Version]string // version -> root inside fsys (absolute)
}

func (r *memRegistry) root(mv module.Version) (string, error) {
	root, ok := r.deps[mv]
	if !ok {
		return "", fmt.Errorf("module %s was not supplied by the host: %w", mv, modregistry.ErrNotFound)
	}
	return root, nil
}

// ModFile implements modconfig.Registry.
func (r *memRegistry) ModFile(ctx context.Context, mv module.Version) (*modfile.File, error) {
	root, err := r.root(mv)
	if err != nil {
		return nil, err
	}
	data, err := fs.ReadFile(r.fsys, root[1:]+"/cue.mod/module.cue")
	if err != nil {
		return nil, fmt.Errorf("dependency %s has no cue.mod/module.cue", mv)
	}
	return modfile.Parse(data, mv.String()+"/cue.mod/module.cue")
}

// Fetch implements modconfig.Registry.
func (r *memRegistry) Fetch(ctx context.Context, mv module.Version) (module.SourceLoc, error) {
	root, err := r.root(mv)
	if err != nil {
		return module.SourceLoc{}, err
	}
	sub, err := fs.Sub(r.fsys, root[1:])
	if err != nil {
		return module.SourceLoc{}, err
	}
	return module.SourceLoc{FS: osRootFS{FS: sub, root: root}, Dir: "."}, nil
}

// ModuleVersions implements modconfig.Registry.
func (r *memRegistry) ModuleVersions(ctx context.Context, mpath string) ([]string, error) {
	var vs []string
	for mv := range r.deps {
		if mv.Path() == mpath || mv.BasePath() == mpath {
			vs = append(vs, mv.Version())
		}
	}
	slices.Sort(vs)
	return vs, nil
}

type osRootFS struct {
	fs.FS
	root string
}

// OSRoot implements module.OSRootFS. The "OS" path is the dependency's
// absolute directory inside load.Config.FS.
func (f osRootFS) OSRoot() string { return f.root }

func (f osRootFS) ReadFile(name string) ([]byte, error) { return fs.ReadFile(f.FS, name) }

func (f osRootFS) ReadDir(name string) ([]fs.DirEntry, error) { return fs.ReadDir(f.FS, name) }

func (f osRootFS) Stat(name string) (fs.FileInfo, error) { return fs.Stat(f.FS, name) }

var _ module.OSRootFS = osRootFS{}

// lruCache keeps up to cacheSize built modules keyed by the request's
// cacheKey. Every entry owns its own cue.Context; contexts grow with every
// FillPath/evaluation done on them, which the host bounds by recycling warm
// wasm instances after a fixed number of calls.
type lruCache struct {
	ll    *list.List // of *cacheEntry, most recently used first
	items map[string]*list.Element
}

type cacheEntry struct {
	key string
	mod *builtModule
}

var moduleCache = &lruCache{ll: list.New(), items: map[string]*list.Element{}}

func (c *lruCache) get(key string) *builtModule {
	el, ok := c.items[key]
	if !ok {
		return nil
	}
	c.ll.MoveToFront(el)
	return el.Value.(*cacheEntry).mod
}

func (c *lruCache) put(key string, mod *builtModule) {
	if el, ok := c.items[key]; ok {
		el.Value.(*cacheEntry).mod = mod
		c.ll.MoveToFront(el)
		return
	}
	c.items[key] = c.ll.PushFront(&cacheEntry{key: key, mod: mod})
	for c.ll.Len() > cacheSize {
		last := c.ll.Back()
		c.ll.Remove(last)
		delete(c.items, last.Value.(*cacheEntry).key)
	}
}

func (c *lruCache) remove(key string) {
	if el, ok := c.items[key]; ok {
		c.ll.Remove(el)
		delete(c.items, key)
	}
}

func (c *lruCache) len() int { return c.ll.Len() }
