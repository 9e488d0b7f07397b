//! `cue.mod/module.cue`: the module path and the dependencies a module declares.
//!
//! A module file is CUE data (no references, no expressions): fields with identifier or string
//! labels, the `a: b: c` shorthand, structs, lists, strings, numbers, booleans, comments. This
//! reads that data subset, unifying repeated struct fields as CUE does, and refuses anything
//! else with a message naming the line. `cue mod tidy` lists every module that provides a
//! transitively imported package, so the dependencies read here are the whole download set.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// What Pequod needs from a module file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModuleFile {
    /// `module`: the module path with its major version (`example.com/app@v0`).
    pub module: Option<String>,
    /// `deps`: module path with major version → exact version (`v0.1.0`).
    pub deps: BTreeMap<String, String>,
}

impl ModuleFile {
    /// Reads a module file; the error says what is wrong and where.
    pub fn parse(text: &str) -> Result<Self, String> {
        let value = Parser::new(text).file()?;
        let module = match value.get("module") {
            None => None,
            Some(Value::String(path)) => Some(path.clone()),
            Some(_) => return Err("module: must be a string".into()),
        };
        let mut deps = BTreeMap::new();
        match value.get("deps") {
            None => {}
            Some(Value::Object(entries)) => {
                for (path, entry) in entries {
                    let version = entry.get("v").and_then(Value::as_str).ok_or_else(|| {
                        format!("deps: {path:?}: needs a version, like v: \"v0.1.0\"")
                    })?;
                    check_dependency(path, version)?;
                    deps.insert(path.clone(), version.to_owned());
                }
            }
            Some(_) => return Err("deps: must be a struct".into()),
        }
        Ok(Self { module, deps })
    }
}

/// A dependency names its major version (`@v0`) and an exact canonical version of that major.
fn check_dependency(path: &str, version: &str) -> Result<(), String> {
    let (base, major) = path.rsplit_once('@').ok_or_else(|| {
        format!("deps: {path:?}: a dependency path needs its major version, like {path}@v0")
    })?;
    let parsed = version
        .strip_prefix('v')
        .and_then(|v| semver::Version::parse(v).ok())
        .ok_or_else(|| {
            format!("deps: {path:?}: {version:?} is not a canonical version like v1.2.3")
        })?;
    if base.is_empty() || major != format!("v{}", parsed.major) {
        return Err(format!(
            "deps: {path:?}: version {version} is not of major version {major}"
        ));
    }
    Ok(())
}

/// Deepest nesting of values a module file may have (a module file nests three or four
/// levels): the parser recurses once per level, and a hostile module must not overflow the
/// operator's stack.
const MAX_NESTING: usize = 64;

struct Parser<'a> {
    text: &'a str,
    pos: usize,
    /// Values being read (structs, lists, `a: b: c` labels) around the current position.
    depth: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            pos: 0,
            depth: 0,
        }
    }

    fn error(&self, what: &str) -> String {
        let line = self.text[..self.pos].matches('\n').count() + 1;
        format!("line {line}: {what}")
    }

    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    /// Skips blanks and comments; with `newlines`, line ends too.
    fn skip(&mut self, newlines: bool) {
        loop {
            let rest = self.rest();
            if rest.starts_with("//") {
                self.pos += rest.find('\n').unwrap_or(rest.len());
            } else if let Some(c) = self.peek()
                && (c == ' ' || c == '\t' || c == '\r' || (newlines && c == '\n'))
            {
                self.pos += 1;
            } else {
                return;
            }
        }
    }

    fn file(mut self) -> Result<Map<String, Value>, String> {
        let fields = self.fields(None)?;
        Ok(fields)
    }

    /// Fields up to `close` (or the end of the text), separated by commas or line ends.
    fn fields(&mut self, close: Option<char>) -> Result<Map<String, Value>, String> {
        let mut fields = Map::new();
        loop {
            self.skip(true);
            match self.peek() {
                None if close.is_none() => return Ok(fields),
                None => return Err(self.error("unexpected end of file; a '}' is missing")),
                Some(c) if Some(c) == close => {
                    self.pos += 1;
                    return Ok(fields);
                }
                Some(_) => {}
            }
            let (label, value) = self.field()?;
            unify(&mut fields, label, value).map_err(|e| self.error(&e))?;
            self.skip(false);
            match self.peek() {
                Some(',' | '\n') => self.pos += 1,
                Some(c) if Some(c) == close => {}
                None if close.is_none() => {}
                _ => return Err(self.error("expected a comma or a new line after a field")),
            }
        }
    }

    fn field(&mut self) -> Result<(String, Value), String> {
        let label = self.label()?;
        self.skip(false);
        // Optional and required markers mean nothing for data.
        if matches!(self.peek(), Some('?' | '!')) {
            self.pos += 1;
        }
        if self.peek() != Some(':') {
            return Err(self.error(&format!("expected ':' after {label:?}")));
        }
        self.pos += 1;
        self.skip(false);
        Ok((label, self.value()?))
    }

    fn label(&mut self) -> Result<String, String> {
        if self.peek() == Some('"') {
            return self.string();
        }
        let ident = self.identifier();
        if ident.is_empty() {
            return Err(self.error("expected a field label"));
        }
        Ok(ident.to_owned())
    }

    fn identifier(&mut self) -> &'a str {
        let rest = self.rest();
        let len = rest
            .char_indices()
            .find(|&(i, c)| {
                !(c.is_alphanumeric() || c == '_' || c == '$' || c == '#')
                    || (i == 0 && c.is_ascii_digit())
            })
            .map_or(rest.len(), |(i, _)| i);
        self.pos += len;
        &rest[..len]
    }

    /// A value, at most [`MAX_NESTING`] levels deep (every nested value comes through here).
    fn value(&mut self) -> Result<Value, String> {
        if self.depth >= MAX_NESTING {
            return Err(self.error(&format!("values nest more than {MAX_NESTING} levels deep")));
        }
        self.depth += 1;
        let value = self.nested_value();
        self.depth -= 1;
        value
    }

    fn nested_value(&mut self) -> Result<Value, String> {
        match self.peek() {
            Some('{') => {
                self.pos += 1;
                Ok(Value::Object(self.fields(Some('}'))?))
            }
            Some('[') => {
                self.pos += 1;
                self.list()
            }
            Some('"') => {
                // A quoted label followed by ':' is the `a: "b": c` shorthand.
                let start = self.pos;
                let text = self.string()?;
                self.skip(false);
                if self.peek() == Some(':') {
                    self.pos = start;
                    let (label, value) = self.field()?;
                    return Ok(Value::Object(Map::from_iter([(label, value)])));
                }
                Ok(Value::String(text))
            }
            Some(c) if c == '-' || c.is_ascii_digit() => self.number(),
            Some(_) => {
                let start = self.pos;
                let ident = self.identifier();
                let after = self.pos;
                self.skip(false);
                if !ident.is_empty() && matches!(self.peek(), Some(':' | '?' | '!')) {
                    self.pos = start;
                    let (label, value) = self.field()?;
                    return Ok(Value::Object(Map::from_iter([(label, value)])));
                }
                self.pos = after;
                match ident {
                    "true" => Ok(Value::Bool(true)),
                    "false" => Ok(Value::Bool(false)),
                    "null" => Ok(Value::Null),
                    "" => Err(self.error("expected a value")),
                    other => Err(self.error(&format!(
                        "{other:?} is not data; a module file holds only literal values"
                    ))),
                }
            }
            None => Err(self.error("expected a value")),
        }
    }

    fn list(&mut self) -> Result<Value, String> {
        let mut items = Vec::new();
        loop {
            self.skip(true);
            if self.peek() == Some(']') {
                self.pos += 1;
                return Ok(Value::Array(items));
            }
            items.push(self.value()?);
            self.skip(true);
            match self.peek() {
                Some(',') => self.pos += 1,
                Some(']') => {}
                _ => return Err(self.error("expected ',' or ']' in a list")),
            }
        }
    }

    fn number(&mut self) -> Result<Value, String> {
        let rest = self.rest();
        let len = rest
            .char_indices()
            .find(|&(i, c)| {
                !(c.is_ascii_alphanumeric() || c == '.' || c == '_' || (i == 0 && c == '-'))
            })
            .map_or(rest.len(), |(i, _)| i);
        let literal = rest[..len].replace('_', "");
        self.pos += len;
        serde_json::from_str::<serde_json::Number>(&literal)
            .map(Value::Number)
            .map_err(|_| self.error(&format!("{literal:?} is not a number")))
    }

    /// A double-quoted string (`"…"` or a `"""` block), escapes decoded.
    fn string(&mut self) -> Result<String, String> {
        if self.rest().starts_with("\"\"\"") {
            return self.block_string();
        }
        self.pos += 1;
        let mut out = String::new();
        loop {
            let c = match self.peek() {
                None | Some('\n') => return Err(self.error("unterminated string")),
                Some(c) => c,
            };
            self.pos += c.len_utf8();
            match c {
                '"' => return Ok(out),
                '\\' => out.push(self.escape()?),
                c => out.push(c),
            }
        }
    }

    fn escape(&mut self) -> Result<char, String> {
        let Some(c) = self.peek() else {
            return Err(self.error("unterminated escape"));
        };
        self.pos += c.len_utf8();
        let hex = |parser: &mut Self, digits: usize| {
            let code = parser
                .rest()
                .get(..digits)
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .and_then(char::from_u32)
                .ok_or_else(|| parser.error("bad \\u escape"))?;
            parser.pos += digits;
            Ok::<char, String>(code)
        };
        Ok(match c {
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            '"' | '\\' | '/' => c,
            'u' => hex(self, 4)?,
            'U' => hex(self, 8)?,
            other => return Err(self.error(&format!("unknown escape \\{other}"))),
        })
    }

    /// `"""` newline, lines, closing `"""` whose indentation is removed from every line.
    fn block_string(&mut self) -> Result<String, String> {
        self.pos += 3;
        let rest = self.rest();
        let end = rest
            .find("\"\"\"")
            .ok_or_else(|| self.error("unterminated \"\"\" string"))?;
        let body = &rest[..end];
        self.pos += end + 3;
        let body = body.strip_prefix('\n').unwrap_or(body);
        let (lines, indent) = body.rsplit_once('\n').unwrap_or(("", body));
        Ok(lines
            .lines()
            .map(|line| line.strip_prefix(indent).unwrap_or(line))
            .collect::<Vec<_>>()
            .join("\n"))
    }
}

/// Adds a field, unifying structs that appear twice (`deps: a: …` and `deps: b: …`).
fn unify(fields: &mut Map<String, Value>, label: String, value: Value) -> Result<(), String> {
    match (fields.get_mut(&label), value) {
        (None, value) => {
            fields.insert(label, value);
            Ok(())
        }
        (Some(Value::Object(existing)), Value::Object(more)) => {
            for (k, v) in more {
                unify(existing, k, v)?;
            }
            Ok(())
        }
        (Some(existing), value) if *existing == value => Ok(()),
        (Some(_), _) => Err(format!("conflicting values for {label:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_cue_mod_tidy_writes() {
        let file = ModuleFile::parse(
            r#"module: "example.com/app@v0"
language: {
	version: "v0.17.0"
}
source: {
	kind: "self"
}
deps: {
	"example.com/policy@v0": {
		v:       "v0.1.0"
		default: true
	}
	"example.org/lib/x@v2": {
		v: "v2.3.4-rc.1"
	}
}
"#,
        )
        .unwrap();
        assert_eq!(file.module.as_deref(), Some("example.com/app@v0"));
        assert_eq!(
            file.deps,
            BTreeMap::from([
                ("example.com/policy@v0".to_owned(), "v0.1.0".to_owned()),
                ("example.org/lib/x@v2".to_owned(), "v2.3.4-rc.1".to_owned()),
            ])
        );
    }

    #[test]
    fn shorthand_comments_commas_and_repeated_structs() {
        let file = ModuleFile::parse(
            "// the app\nmodule: \"a.example/app\" // trailing\nlanguage: version: \"v0.9.0\", \
             custom: { x: [1, -2.5, \"s\", {y: null}], z: \"\"\"\n    two\n    lines\n    \"\"\" }\n\
             deps: \"a.example/one@v0\": v: \"v0.0.1\"\ndeps: \"a.example/two@v1\": {v: \"v1.0.0\"}\n",
        )
        .unwrap();
        assert_eq!(file.module.as_deref(), Some("a.example/app"));
        assert_eq!(file.deps.len(), 2);
        assert_eq!(file.deps["a.example/two@v1"], "v1.0.0");
        assert_eq!(ModuleFile::parse("").unwrap(), ModuleFile::default());
    }

    #[test]
    fn anything_but_data_is_refused_with_a_line() {
        for (text, expected) in [
            (
                "module: \"a.example/x\"\nx: y + 1\n",
                "line 2: \"y\" is not data",
            ),
            ("deps: {\n", "a '}' is missing"),
            ("module: 1", "module: must be a string"),
            (
                "deps: \"a.example/x\": v: \"v0.1.0\"",
                "needs its major version",
            ),
            (
                "deps: \"a.example/x@v1\": v: \"v0.1.0\"",
                "not of major version v1",
            ),
            (
                "deps: \"a.example/x@v0\": v: \"latest\"",
                "not a canonical version",
            ),
            ("deps: \"a.example/x@v0\": {}", "needs a version"),
            ("a: \"x\"\na: \"y\"", "line 2: conflicting values for \"a\""),
            ("a: \"unterminated\n", "line 1: unterminated string"),
        ] {
            let error = ModuleFile::parse(text).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        // 1000 levels overflowed a 2 MiB stack (a tokio worker's) before the bound.
        for (open, close) in [("[", "]"), ("{a: ", "}"), ("a: ", ""), ("\"a\": ", "")] {
            for levels in [MAX_NESTING - 1, 100_000] {
                let text = format!("deps: {}1{}", open.repeat(levels), close.repeat(levels));
                let result = ModuleFile::parse(&text);
                if levels < MAX_NESTING {
                    assert!(
                        result.as_ref().is_err_and(|e| !e.contains("nest")),
                        "{open}: {result:?}"
                    );
                } else {
                    let error = result.expect_err("too deep");
                    assert!(error.contains("nest more than 64 levels"), "{error}");
                }
            }
        }
        let ok = format!(
            "module: \"a.example/x@v0\"\nx: {}1{}",
            "[".repeat(60),
            "]".repeat(60)
        );
        assert!(ModuleFile::parse(&ok).is_ok());
    }
}
