//! Prometheus' template language: the subset of Go's `text/template` that
//! alert labels and annotations use, with Prometheus' functions.
//!
//! [`Template::parse`] checks syntax, functions and variables (as Go does at
//! parse time, so `promtool check rules` catches them); [`Template::execute`]
//! renders with `$labels`, `$externalLabels`, `$externalURL` and `$value`
//! bound as Prometheus' header binds them. Output formatting follows Go's
//! `fmt` (see [`crate::gofmt`]).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use crate::gofmt::{format_prec_e, format_prec_f, format_prec_g, format_v, time_string};

/// One sample of a `query` result (`.Labels`, `.Value`).
#[derive(Debug, Clone, PartialEq)]
pub struct QuerySample {
    /// Labels, with `__name__` when the query kept it.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

/// What a template sees as `.`: Prometheus' `AlertTemplateData`.
#[derive(Debug, Clone, Default)]
pub struct TemplateData {
    /// `.Labels` / `$labels`.
    pub labels: BTreeMap<String, String>,
    /// `.ExternalLabels` / `$externalLabels`.
    pub external_labels: BTreeMap<String, String>,
    /// `.ExternalURL` / `$externalURL`.
    pub external_url: String,
    /// `.Value` / `$value`.
    pub value: f64,
}

/// Runs a PromQL instant query for the `query` function.
pub type QueryFn<'a> = dyn FnMut(&str) -> Result<Vec<QuerySample>, String> + 'a;

/// A template value.
#[derive(Debug, Clone)]
enum Val {
    /// A map lookup that found nothing (prints `<no value>`).
    Missing,
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Map(Arc<BTreeMap<String, String>>),
    AnyMap(BTreeMap<String, Val>),
    Samples(Arc<Vec<QuerySample>>),
    Sample(Arc<QuerySample>),
    Data(Arc<TemplateData>),
}

impl Val {
    fn truth(&self) -> bool {
        match self {
            Val::Missing | Val::Nil => false,
            Val::Bool(b) => *b,
            Val::Int(i) => *i != 0,
            Val::Float(f) => *f != 0.0,
            Val::Str(s) => !s.is_empty(),
            Val::Map(m) => !m.is_empty(),
            Val::AnyMap(m) => !m.is_empty(),
            Val::Samples(s) => !s.is_empty(),
            Val::Sample(_) | Val::Data(_) => true,
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Val::Missing => "<invalid>",
            Val::Nil => "<nil>",
            Val::Bool(_) => "bool",
            Val::Int(_) => "int",
            Val::Float(_) => "float64",
            Val::Str(_) => "string",
            Val::Map(_) => "map[string]string",
            Val::AnyMap(_) => "map[string]interface {}",
            Val::Samples(_) => "template.queryResult",
            Val::Sample(_) => "*template.sample",
            Val::Data(_) => "struct",
        }
    }

    fn print(&self, out: &mut String) {
        match self {
            Val::Missing => out.push_str("<no value>"),
            Val::Nil => out.push_str("<nil>"),
            Val::Bool(b) => {
                let _ = write!(out, "{b}");
            }
            Val::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Val::Float(f) => out.push_str(&format_v(*f)),
            Val::Str(s) => out.push_str(s),
            Val::Map(m) => print_map(out, m.iter().map(|(k, v)| (k.as_str(), Val::Str(v.clone())))),
            Val::AnyMap(m) => print_map(out, m.iter().map(|(k, v)| (k.as_str(), v.clone()))),
            Val::Samples(s) => {
                out.push('[');
                for (i, x) in s.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    Val::Sample(Arc::new(x.clone())).print(out);
                }
                out.push(']');
            }
            Val::Sample(s) => {
                out.push_str("&{");
                print_map(out, s.labels.iter().map(|(k, v)| (k.as_str(), Val::Str(v.clone()))));
                out.push(' ');
                out.push_str(&format_v(s.value));
                out.push('}');
            }
            Val::Data(d) => {
                let _ = write!(out, "{{map[...] map[...] {} {}}}", d.external_url, format_v(d.value));
            }
        }
    }

    fn to_display(&self) -> String {
        let mut s = String::new();
        self.print(&mut s);
        s
    }
}

fn print_map<'a>(out: &mut String, items: impl Iterator<Item = (&'a str, Val)>) {
    out.push_str("map[");
    for (i, (k, v)) in items.enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(k);
        out.push(':');
        v.print(out);
    }
    out.push(']');
}

// ---------------------------------------------------------------- parsing

#[derive(Debug, Clone)]
enum Arg {
    /// `.a.b` (empty: `.`).
    Field(Vec<String>),
    /// `$x.a.b`.
    Var(String, Vec<String>),
    Func(String),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Nil,
    Pipe(Box<Pipe>, Vec<String>),
}

#[derive(Debug, Clone)]
struct Cmd {
    args: Vec<Arg>,
    /// Byte offset of the command in the template text.
    pos: usize,
    /// The command as Go prints it in errors (`gt $value 1`).
    text: String,
}

#[derive(Debug, Clone, Default)]
struct Pipe {
    decl: Vec<String>,
    assign: bool,
    cmds: Vec<Cmd>,
    /// The pipeline as Go prints it.
    text: String,
}

/// Length of Prometheus' header (`{{$labels := .Labels}}...{{$value := .Value}}`)
/// put before every alert template, which shifts error columns on line 1.
const HEADER_LEN: usize = 112;

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action { pipe: Pipe, line: usize },
    If { pipe: Pipe, then: Vec<Node>, els: Vec<Node>, line: usize },
    Range { pipe: Pipe, body: Vec<Node>, els: Vec<Node>, line: usize },
    With { pipe: Pipe, body: Vec<Node>, els: Vec<Node>, line: usize },
    Break,
    Continue,
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    name: String,
    src: String,
    nodes: Vec<Node>,
}

/// The functions a template may call.
const FUNCS: &[&str] = &[
    // Go's builtins
    "and",
    "or",
    "not",
    "len",
    "index",
    "print",
    "printf",
    "println",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "html",
    "js",
    "urlquery",
    "slice",
    "call",
    // Prometheus'
    "query",
    "first",
    "label",
    "value",
    "strvalue",
    "args",
    "reReplaceAll",
    "safeHtml",
    "match",
    "title",
    "toUpper",
    "toLower",
    "graphLink",
    "tableLink",
    "sortByLabel",
    "humanize",
    "humanize1024",
    "humanizeDuration",
    "humanizePercentage",
    "humanizeTimestamp",
    "toTime",
    "pathPrefix",
    "externalURL",
    "stripPort",
    "stripDomain",
    "parseDuration",
    "tmpl",
];

/// The variables Prometheus' header defines.
const HEADER_VARS: &[&str] = &["$", "$labels", "$externalLabels", "$externalURL", "$value"];

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Pipe,
    LParen,
    RParen,
    Declare,
    Assign,
    Comma,
    Str(String),
    Num(String),
    Ident(String),
    /// `.a.b` or `.`
    Field(Vec<String>),
    /// `$x` with its field chain.
    Var(String, Vec<String>),
}

struct Parser<'a> {
    name: &'a str,
    src: &'a str,
    pos: usize,
    line: usize,
    vars: Vec<String>,
    /// Byte spans of the current action's tokens.
    spans: Vec<(usize, usize)>,
    tok_start: usize,
}

/// A template error, formatted as Go's `text/template` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError(pub String);

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

enum Stop {
    Eof,
    End,
    Else(Option<(String, Pipe)>),
}

impl<'a> Parser<'a> {
    fn err(&self, msg: impl std::fmt::Display) -> TemplateError {
        TemplateError(format!("template: {}:{}: {msg}", self.name, self.line))
    }

    fn parse_list(&mut self) -> Result<(Vec<Node>, Stop), TemplateError> {
        let mut nodes = Vec::new();
        loop {
            let rest = &self.src[self.pos..];
            let Some(open) = rest.find("{{") else {
                if !rest.is_empty() {
                    nodes.push(Node::Text(rest.to_owned()));
                }
                self.line += rest.matches('\n').count();
                self.pos = self.src.len();
                return Ok((nodes, Stop::Eof));
            };
            let mut text = &rest[..open];
            let mut inner_start = self.pos + open + 2;
            if self.src[inner_start..].starts_with("- ")
                || self.src[inner_start..].starts_with("-\t")
                || self.src[inner_start..].starts_with("-\n")
            {
                text = text.trim_end();
                inner_start += 1;
            }
            if !text.is_empty() {
                nodes.push(Node::Text(text.to_owned()));
            }
            self.line += rest[..open].matches('\n').count();
            // Comments.
            let after = self.src[inner_start..].trim_start();
            if after.starts_with("/*") {
                let Some(end) = self.src[inner_start..].find("*/") else { return Err(self.err("unclosed comment")) };
                let mut p = inner_start + end + 2;
                let trail = &self.src[p..];
                let trimmed = trail.trim_start();
                let (close_len, trim_after) = if let Some(t) = trimmed.strip_prefix("-}}") {
                    (trail.len() - t.len(), true)
                } else if let Some(t) = trimmed.strip_prefix("}}") {
                    (trail.len() - t.len(), false)
                } else {
                    return Err(self.err("comment ends before closing delimiter"));
                };
                self.line += self.src[self.pos + open..p].matches('\n').count();
                p += close_len;
                if trim_after {
                    let t = &self.src[p..];
                    p += t.len() - t.trim_start().len();
                }
                self.pos = p;
                continue;
            }
            let (toks, keyword, end_pos, trim_after) = self.lex_action(inner_start)?;
            self.pos = end_pos;
            if trim_after {
                let t = &self.src[self.pos..];
                let skipped = t.len() - t.trim_start().len();
                self.line += t[..skipped].matches('\n').count();
                self.pos += skipped;
            }
            let line = self.line;
            match keyword.as_deref() {
                Some("end") => {
                    if !toks.is_empty() {
                        return Err(self.err("unexpected token in end"));
                    }
                    return Ok((nodes, Stop::End));
                }
                Some("else") => {
                    // `else if ...` / `else with ...`
                    if let Some(Tok::Ident(k)) = toks.first()
                        && (k == "if" || k == "with")
                    {
                        let k = k.clone();
                        let pipe = self.parse_pipe(&toks[1..], 1, false)?;
                        return Ok((nodes, Stop::Else(Some((k, pipe)))));
                    }
                    if !toks.is_empty() {
                        return Err(self.err("unexpected token in else"));
                    }
                    return Ok((nodes, Stop::Else(None)));
                }
                Some(k @ ("if" | "with" | "range")) => {
                    let mark = self.vars.len();
                    let pipe = self.parse_pipe(&toks, 0, k == "range")?;
                    let node = self.parse_control(k, pipe, line)?;
                    self.vars.truncate(mark);
                    nodes.push(node);
                }
                Some("break") => nodes.push(Node::Break),
                Some("continue") => nodes.push(Node::Continue),
                Some(k @ ("define" | "template" | "block")) => {
                    return Err(self.err(format!("{{{{{k}}}}} is not supported in rule templates")));
                }
                _ => {
                    let pipe = self.parse_pipe(&toks, 0, false)?;
                    nodes.push(Node::Action { pipe, line });
                }
            }
        }
    }

    fn parse_control(&mut self, kind: &str, pipe: Pipe, line: usize) -> Result<Node, TemplateError> {
        let (body, stop) = self.parse_list()?;
        let els = match stop {
            Stop::Eof => return Err(self.err("unexpected EOF")),
            Stop::End => Vec::new(),
            Stop::Else(None) => {
                let (els, stop) = self.parse_list()?;
                if !matches!(stop, Stop::End) {
                    return Err(self.err("unexpected EOF"));
                }
                els
            }
            Stop::Else(Some((k2, pipe2))) => {
                // `else if` chains end with the outer `end`.
                let mark = self.vars.len();
                let inner = self.parse_control(&k2, pipe2, line)?;
                self.vars.truncate(mark);
                vec![inner]
            }
        };
        Ok(match kind {
            "if" => Node::If { pipe, then: body, els, line },
            "with" => Node::With { pipe, body, els, line },
            _ => Node::Range { pipe, body, els, line },
        })
    }

    /// Lexes one action from `start` (after `{{` and a trim marker) to `}}`.
    fn lex_action(&mut self, start: usize) -> Result<(Vec<Tok>, Option<String>, usize, bool), TemplateError> {
        let b = self.src.as_bytes();
        let mut i = start;
        let mut toks = Vec::new();
        let mut keyword = None;
        self.spans.clear();
        loop {
            if self.spans.len() < toks.len() {
                self.spans.push((self.tok_start, i));
            }
            while i < b.len() && (b[i] == b' ' || b[i] == b'\t' || b[i] == b'\r' || b[i] == b'\n') {
                if b[i] == b'\n' {
                    self.line += 1;
                }
                i += 1;
            }
            if i >= b.len() {
                return Err(self.err("unclosed action"));
            }
            if self.src[i..].starts_with("-}}") && i > start && matches!(b[i - 1], b' ' | b'\t' | b'\n' | b'\r') {
                return Ok((toks, keyword, i + 3, true));
            }
            if self.src[i..].starts_with("}}") {
                return Ok((toks, keyword, i + 2, false));
            }
            let c = b[i];
            self.tok_start = i;
            match c {
                b'|' => {
                    toks.push(Tok::Pipe);
                    i += 1;
                }
                b'(' => {
                    toks.push(Tok::LParen);
                    i += 1;
                }
                b')' => {
                    toks.push(Tok::RParen);
                    i += 1;
                }
                b',' => {
                    toks.push(Tok::Comma);
                    i += 1;
                }
                b':' if b.get(i + 1) == Some(&b'=') => {
                    toks.push(Tok::Declare);
                    i += 2;
                }
                b'=' => {
                    toks.push(Tok::Assign);
                    i += 1;
                }
                b'"' => {
                    let mut s = String::new();
                    i += 1;
                    loop {
                        let Some(&ch) = b.get(i) else { return Err(self.err("unterminated quoted string")) };
                        match ch {
                            b'"' => {
                                i += 1;
                                break;
                            }
                            b'\\' => {
                                let Some(&e) = b.get(i + 1) else { return Err(self.err("unterminated quoted string")) };
                                let (ch, used) = match e {
                                    b'n' => ('\n', 2),
                                    b't' => ('\t', 2),
                                    b'r' => ('\r', 2),
                                    b'\\' => ('\\', 2),
                                    b'"' => ('"', 2),
                                    b'\'' => ('\'', 2),
                                    b'a' => ('\x07', 2),
                                    b'b' => ('\x08', 2),
                                    b'f' => ('\x0c', 2),
                                    b'v' => ('\x0b', 2),
                                    b'x' => {
                                        let h = self.src.get(i + 2..i + 4).unwrap_or("");
                                        let v = u8::from_str_radix(h, 16).map_err(|_| self.err("bad escape"))?;
                                        (char::from(v), 4)
                                    }
                                    b'u' => {
                                        let h = self.src.get(i + 2..i + 6).unwrap_or("");
                                        let v = u32::from_str_radix(h, 16).map_err(|_| self.err("bad escape"))?;
                                        (char::from_u32(v).ok_or_else(|| self.err("bad escape"))?, 6)
                                    }
                                    _ => return Err(self.err("unknown escape sequence")),
                                };
                                s.push(ch);
                                i += used;
                            }
                            b'\n' => return Err(self.err("unterminated quoted string")),
                            _ => {
                                let ch = self.src[i..].chars().next().unwrap_or('\u{fffd}');
                                s.push(ch);
                                i += ch.len_utf8();
                            }
                        }
                    }
                    toks.push(Tok::Str(s));
                }
                b'`' => {
                    let Some(end) = self.src[i + 1..].find('`') else {
                        return Err(self.err("unterminated raw quoted string"));
                    };
                    let s = &self.src[i + 1..i + 1 + end];
                    self.line += s.matches('\n').count();
                    toks.push(Tok::Str(s.to_owned()));
                    i += end + 2;
                }
                b'.' if !b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                    let (chain, n) = field_chain(&self.src[i..]);
                    toks.push(Tok::Field(chain));
                    i += n;
                }
                b'$' => {
                    let mut j = i + 1;
                    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                        j += 1;
                    }
                    let name = self.src[i..j].to_owned();
                    let (chain, n) =
                        if b.get(j) == Some(&b'.') { field_chain(&self.src[j..]) } else { (Vec::new(), 0) };
                    toks.push(Tok::Var(name, chain));
                    i = j + n;
                }
                c if c.is_ascii_digit() || c == b'-' || c == b'+' || c == b'.' => {
                    let mut j = i + 1;
                    while j < b.len()
                        && (b[j].is_ascii_alphanumeric()
                            || b[j] == b'.'
                            || b[j] == b'_'
                            || ((b[j] == b'-' || b[j] == b'+') && matches!(b[j - 1], b'e' | b'E')))
                    {
                        j += 1;
                    }
                    toks.push(Tok::Num(self.src[i..j].to_owned()));
                    i = j;
                }
                c if c.is_ascii_alphabetic() || c == b'_' => {
                    let mut j = i + 1;
                    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                        j += 1;
                    }
                    let word = self.src[i..j].to_owned();
                    if toks.is_empty()
                        && keyword.is_none()
                        && matches!(
                            word.as_str(),
                            "if" | "else"
                                | "end"
                                | "range"
                                | "with"
                                | "define"
                                | "template"
                                | "block"
                                | "break"
                                | "continue"
                        )
                    {
                        keyword = Some(word);
                    } else {
                        toks.push(Tok::Ident(word));
                    }
                    i = j;
                }
                _ => {
                    let ch = self.src[i..].chars().next().unwrap_or('?');
                    return Err(self.err(format!("unexpected {ch:?} in command")));
                }
            }
        }
    }

    fn span(&self, idx: usize) -> (usize, usize) {
        self.spans.get(idx).copied().unwrap_or((0, 0))
    }

    fn parse_pipe(&mut self, toks: &[Tok], base: usize, range: bool) -> Result<Pipe, TemplateError> {
        let mut pipe = Pipe::default();
        let mut rest = toks;
        let mut rest_base = base;
        // Declarations: `$x :=`, `$x =`, `$i, $e :=` (range only).
        let decl_end = toks.iter().position(|t| matches!(t, Tok::Declare | Tok::Assign));
        if let Some(d) = decl_end {
            let names: Vec<&Tok> = toks[..d].iter().filter(|t| !matches!(t, Tok::Comma)).collect();
            let all_vars = names.iter().all(|t| matches!(t, Tok::Var(_, c) if c.is_empty()));
            if all_vars && !names.is_empty() && (names.len() == 1 || (range && names.len() == 2)) {
                pipe.assign = matches!(toks[d], Tok::Assign);
                for t in names {
                    if let Tok::Var(n, _) = t {
                        if pipe.assign && !self.vars.contains(n) {
                            return Err(self.err(format!("undefined variable: {n}")));
                        }
                        pipe.decl.push(n.clone());
                    }
                }
                rest = &toks[d + 1..];
                rest_base = base + d + 1;
            } else if names.len() > 2 || !all_vars {
                return Err(self.err("too many declarations in command"));
            }
        }
        let mut cmd = Vec::new();
        let mut texts: Vec<String> = Vec::new();
        let mut cmd_pos = self.span(rest_base).0;
        let mut i = 0;
        while i < rest.len() {
            match &rest[i] {
                Tok::Pipe => {
                    if cmd.is_empty() {
                        return Err(self.err("missing command"));
                    }
                    pipe.cmds.push(Cmd { args: std::mem::take(&mut cmd), pos: cmd_pos, text: texts.join(" ") });
                    texts.clear();
                    i += 1;
                    cmd_pos = self.span(rest_base + i).0;
                }
                _ => {
                    let (arg, n, text) = self.parse_operand(&rest[i..], rest_base + i)?;
                    cmd.push(arg);
                    texts.push(text);
                    i += n;
                }
            }
        }
        if cmd.is_empty() {
            return Err(self.err("missing value for command"));
        }
        pipe.cmds.push(Cmd { args: cmd, pos: cmd_pos, text: texts.join(" ") });
        let cmds: Vec<&str> = pipe.cmds.iter().map(|c| c.text.as_str()).collect();
        pipe.text = if pipe.decl.is_empty() {
            cmds.join(" | ")
        } else {
            format!("{} {} {}", pipe.decl.join(", "), if pipe.assign { "=" } else { ":=" }, cmds.join(" | "))
        };
        for (i, c) in pipe.cmds.iter().enumerate().skip(1) {
            if !matches!(c.args.first(), Some(Arg::Func(_))) {
                return Err(self.err(format!("non executable command in pipeline stage {}", i + 1)));
            }
        }
        // Declared names become visible after the pipeline.
        if !pipe.assign {
            self.vars.extend(pipe.decl.iter().cloned());
        }
        Ok(pipe)
    }

    fn parse_operand(&mut self, toks: &[Tok], base: usize) -> Result<(Arg, usize, String), TemplateError> {
        let (s0, e0) = self.span(base);
        let text = self.src.get(s0..e0).unwrap_or("").trim_end().to_owned();
        let arg = match &toks[0] {
            Tok::Str(s) => Arg::Str(s.clone()),
            Tok::Num(n) => parse_number(n).ok_or_else(|| self.err(format!("illegal number syntax: {n:?}")))?,
            Tok::Field(c) => Arg::Field(c.clone()),
            Tok::Var(n, c) => {
                if !self.vars.contains(n) {
                    return Err(self.err(format!("undefined variable \"{n}\"")));
                }
                Arg::Var(n.clone(), c.clone())
            }
            Tok::Ident(w) => match w.as_str() {
                "true" => Arg::Bool(true),
                "false" => Arg::Bool(false),
                "nil" => Arg::Nil,
                f if FUNCS.contains(&f) => Arg::Func(f.to_owned()),
                f => return Err(self.err(format!("function \"{f}\" not defined"))),
            },
            Tok::LParen => {
                let mut depth = 0;
                let mut end = None;
                for (j, t) in toks.iter().enumerate() {
                    match t {
                        Tok::LParen => depth += 1,
                        Tok::RParen => {
                            depth -= 1;
                            if depth == 0 {
                                end = Some(j);
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                let Some(end) = end else { return Err(self.err("unclosed left paren")) };
                let pipe = self.parse_pipe(&toks[1..end], base + 1, false)?;
                let text = format!("({})", pipe.text);
                // A field chain right after `)`.
                if let Some(Tok::Field(c)) = toks.get(end + 1)
                    && !c.is_empty()
                {
                    let text = format!("{text}.{}", c.join("."));
                    return Ok((Arg::Pipe(Box::new(pipe), c.clone()), end + 2, text));
                }
                return Ok((Arg::Pipe(Box::new(pipe), Vec::new()), end + 1, text));
            }
            Tok::RParen => return Err(self.err("unexpected right paren")),
            Tok::Comma => return Err(self.err("unexpected \",\" in command")),
            Tok::Declare | Tok::Assign => return Err(self.err("unexpected \":=\" in operand")),
            Tok::Pipe => return Err(self.err("missing command")),
        };
        Ok((arg, 1, text))
    }
}

fn field_chain(s: &str) -> (Vec<String>, usize) {
    let b = s.as_bytes();
    let mut chain = Vec::new();
    let mut i = 0;
    while i < b.len() && b[i] == b'.' {
        let mut j = i + 1;
        while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
            j += 1;
        }
        if j == i + 1 {
            // A lone `.`.
            i = j;
            break;
        }
        chain.push(s[i + 1..j].to_owned());
        i = j;
    }
    (chain, i)
}

fn parse_number(n: &str) -> Option<Arg> {
    let clean = n.replace('_', "");
    if let Some(h) = clean.strip_prefix("0x").or_else(|| clean.strip_prefix("0X")) {
        return i64::from_str_radix(h, 16).ok().map(Arg::Int);
    }
    if let Ok(i) = clean.parse::<i64>() {
        return Some(Arg::Int(i));
    }
    clean.parse::<f64>().ok().map(Arg::Float)
}

impl Template {
    /// Parses `text`; `name` is used in error messages (Prometheus uses
    /// `__alert_<alertname>`). Fails on syntax errors, unknown functions
    /// and undefined variables.
    pub fn parse(name: &str, text: &str) -> Result<Self, TemplateError> {
        let mut p = Parser {
            name,
            src: text,
            pos: 0,
            line: 1,
            vars: HEADER_VARS.iter().map(|s| (*s).to_owned()).collect(),
            spans: Vec::new(),
            tok_start: 0,
        };
        let (nodes, stop) = p.parse_list()?;
        match stop {
            Stop::Eof => Ok(Self { name: name.to_owned(), src: text.to_owned(), nodes }),
            Stop::End => Err(p.err("unexpected {{end}}")),
            Stop::Else(_) => Err(p.err("unexpected {{else}}")),
        }
    }

    /// Renders the template.
    pub fn execute(&self, data: &TemplateData, ctx: &mut ExecContext<'_>) -> Result<String, TemplateError> {
        let data = Arc::new(data.clone());
        let mut ex = Exec {
            name: &self.name,
            src: &self.src,
            vars: vec![
                ("$".to_owned(), Val::Data(Arc::clone(&data))),
                ("$labels".to_owned(), Val::Map(Arc::new(data.labels.clone()))),
                ("$externalLabels".to_owned(), Val::Map(Arc::new(data.external_labels.clone()))),
                ("$externalURL".to_owned(), Val::Str(data.external_url.clone())),
                ("$value".to_owned(), Val::Float(data.value)),
            ],
            ctx,
            out: String::new(),
            line: 1,
            budget: 1_000_000,
        };
        let dot = Val::Data(data);
        match ex.walk(&self.nodes, &dot) {
            Ok(_) => Ok(ex.out),
            Err(e) => Err(e),
        }
    }
}

/// Renders `text` with Prometheus' alert template data; errors are wrapped
/// as Prometheus' `Expand` wraps them.
pub fn expand(name: &str, text: &str, data: &TemplateData, ctx: &mut ExecContext<'_>) -> Result<String, TemplateError> {
    let t =
        Template::parse(name, text).map_err(|e| TemplateError(format!("error parsing template {name}: {}", e.0)))?;
    t.execute(data, ctx).map_err(|e| TemplateError(format!("error executing template {name}: {}", e.0)))
}

/// What template functions need from the host.
pub struct ExecContext<'a> {
    /// Runs `query`.
    pub query: &'a mut QueryFn<'a>,
    /// The external URL (for `externalURL`, `pathPrefix`, `graphLink`).
    pub external_url: String,
}

enum Flow {
    Normal,
    Break,
    Continue,
}

struct Exec<'a, 'b> {
    name: &'a str,
    src: &'a str,
    vars: Vec<(String, Val)>,
    ctx: &'a mut ExecContext<'b>,
    out: String,
    line: usize,
    budget: usize,
}

impl Exec<'_, '_> {
    fn err(&self, msg: impl std::fmt::Display) -> TemplateError {
        TemplateError(format!("template: {}:{}: {msg}", self.name, self.line))
    }

    /// Go's `ErrorContext` of a command: `name:line:col` (0-based column,
    /// Prometheus' header before line 1) and the command as text.
    fn err_at(&self, cmd: &Cmd, msg: impl std::fmt::Display) -> TemplateError {
        let before = self.src.get(..cmd.pos).unwrap_or("");
        let line = 1 + before.matches('\n').count();
        let col = match before.rfind('\n') {
            Some(nl) => cmd.pos - nl - 1,
            None => HEADER_LEN + cmd.pos,
        };
        TemplateError(format!(
            "template: {name}:{line}:{col}: executing \"{name}\" at <{}>: {msg}",
            cmd.text,
            name = self.name
        ))
    }

    fn walk(&mut self, nodes: &[Node], dot: &Val) -> Result<Flow, TemplateError> {
        for n in nodes {
            self.budget = self.budget.checked_sub(1).ok_or_else(|| self.err("template too expensive"))?;
            match n {
                Node::Text(t) => self.out.push_str(t),
                Node::Action { pipe, line } => {
                    self.line = *line;
                    // Declarations stay visible until the end of the enclosing block.
                    let v = self.eval_pipe(pipe, dot)?;
                    if pipe.decl.is_empty() {
                        v.print(&mut self.out);
                    }
                }
                Node::If { pipe, then, els, line } => {
                    self.line = *line;
                    let mark = self.vars.len();
                    let v = self.eval_pipe(pipe, dot)?;
                    let flow = if v.truth() { self.walk(then, dot)? } else { self.walk(els, dot)? };
                    self.vars.truncate(mark);
                    if !matches!(flow, Flow::Normal) {
                        return Ok(flow);
                    }
                }
                Node::With { pipe, body, els, line } => {
                    self.line = *line;
                    let mark = self.vars.len();
                    let v = self.eval_pipe(pipe, dot)?;
                    let flow = if v.truth() { self.walk(body, &v)? } else { self.walk(els, dot)? };
                    self.vars.truncate(mark);
                    if !matches!(flow, Flow::Normal) {
                        return Ok(flow);
                    }
                }
                Node::Range { pipe, body, els, line } => {
                    self.line = *line;
                    let mark = self.vars.len();
                    let mut decl_pipe = pipe.clone();
                    let decl = std::mem::take(&mut decl_pipe.decl);
                    let v = self.eval_pipe(&decl_pipe, dot)?;
                    let items: Vec<(Val, Val)> = match v {
                        Val::Samples(s) => s
                            .iter()
                            .enumerate()
                            .map(|(i, x)| (Val::Int(i as i64), Val::Sample(Arc::new(x.clone()))))
                            .collect(),
                        Val::Map(m) => m.iter().map(|(k, v)| (Val::Str(k.clone()), Val::Str(v.clone()))).collect(),
                        Val::AnyMap(m) => m.into_iter().map(|(k, v)| (Val::Str(k), v)).collect(),
                        Val::Int(n) => (0..n.max(0)).map(|i| (Val::Int(i), Val::Int(i))).collect(),
                        Val::Nil | Val::Missing => Vec::new(),
                        other => return Err(self.err(format!("range can't iterate over {}", other.to_display()))),
                    };
                    if items.is_empty() {
                        let flow = self.walk(els, dot)?;
                        self.vars.truncate(mark);
                        if !matches!(flow, Flow::Normal) {
                            return Ok(flow);
                        }
                        continue;
                    }
                    for (k, elem) in items {
                        let inner = self.vars.len();
                        match decl.as_slice() {
                            [e] => self.vars.push((e.clone(), elem.clone())),
                            [kname, e] => {
                                self.vars.push((kname.clone(), k));
                                self.vars.push((e.clone(), elem.clone()));
                            }
                            _ => {}
                        }
                        let flow = self.walk(body, &elem)?;
                        self.vars.truncate(inner);
                        if matches!(flow, Flow::Break) {
                            break;
                        }
                    }
                    self.vars.truncate(mark);
                }
                Node::Break => return Ok(Flow::Break),
                Node::Continue => return Ok(Flow::Continue),
            }
        }
        Ok(Flow::Normal)
    }

    fn eval_pipe(&mut self, pipe: &Pipe, dot: &Val) -> Result<Val, TemplateError> {
        let mut last: Option<Val> = None;
        for cmd in &pipe.cmds {
            last = Some(self.eval_cmd(cmd, dot, last)?);
        }
        let v = last.unwrap_or(Val::Nil);
        for name in &pipe.decl {
            if pipe.assign {
                // `$x = value` assigns to the innermost `$x`.
                if let Some(slot) = self.vars.iter_mut().rev().find(|(n, _)| n == name) {
                    slot.1 = v.clone();
                }
            } else {
                self.vars.push((name.clone(), v.clone()));
            }
        }
        Ok(v)
    }

    fn lookup_var(&self, name: &str) -> Result<Val, TemplateError> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| self.err(format!("undefined variable: {name}")))
    }

    fn field(&self, v: Val, chain: &[String]) -> Result<Val, TemplateError> {
        let mut cur = v;
        for f in chain {
            cur = match cur {
                Val::Map(m) => m.get(f).map_or(Val::Missing, |s| Val::Str(s.clone())),
                Val::AnyMap(m) => m.get(f).cloned().unwrap_or(Val::Missing),
                Val::Data(d) => match f.as_str() {
                    "Labels" => Val::Map(Arc::new(d.labels.clone())),
                    "ExternalLabels" => Val::Map(Arc::new(d.external_labels.clone())),
                    "ExternalURL" => Val::Str(d.external_url.clone()),
                    "Value" => Val::Float(d.value),
                    _ => return Err(self.err(format!("can't evaluate field {f} in type *template.AlertTemplateData"))),
                },
                Val::Sample(s) => match f.as_str() {
                    "Labels" => Val::Map(Arc::new(s.labels.clone())),
                    "Value" => Val::Float(s.value),
                    _ => return Err(self.err(format!("can't evaluate field {f} in type *template.sample"))),
                },
                Val::Missing | Val::Nil => return Err(self.err(format!("nil pointer evaluating interface {{}}.{f}"))),
                other => return Err(self.err(format!("can't evaluate field {f} in type {}", other.type_name()))),
            };
        }
        Ok(cur)
    }

    fn eval_arg(&mut self, a: &Arg, dot: &Val) -> Result<Val, TemplateError> {
        Ok(match a {
            Arg::Field(c) => self.field(dot.clone(), c)?,
            Arg::Var(n, c) => {
                let v = self.lookup_var(n)?;
                self.field(v, c)?
            }
            Arg::Str(s) => Val::Str(s.clone()),
            Arg::Int(i) => Val::Int(*i),
            Arg::Float(f) => Val::Float(*f),
            Arg::Bool(b) => Val::Bool(*b),
            Arg::Nil => Val::Nil,
            Arg::Pipe(p, c) => {
                let mark = self.vars.len();
                let v = self.eval_pipe(p, dot)?;
                self.vars.truncate(mark);
                self.field(v, c)?
            }
            Arg::Func(f) => self.call(f, Vec::new())?,
        })
    }

    fn eval_cmd(&mut self, cmd: &Cmd, dot: &Val, piped: Option<Val>) -> Result<Val, TemplateError> {
        match cmd.args.first() {
            Some(Arg::Func(f)) => {
                // `and`/`or` short-circuit.
                let mut args = Vec::with_capacity(cmd.args.len());
                if f == "and" || f == "or" {
                    let want = f == "or";
                    let mut last = Val::Nil;
                    for a in &cmd.args[1..] {
                        last = self.eval_arg(a, dot)?;
                        if last.truth() == want {
                            return Ok(last);
                        }
                    }
                    if let Some(p) = piped {
                        last = p;
                    }
                    return Ok(last);
                }
                for a in &cmd.args[1..] {
                    args.push(self.eval_arg(a, dot)?);
                }
                if let Some(p) = piped {
                    args.push(p);
                }
                self.call(f, args).map_err(|e| {
                    if e.0.starts_with("template: ") {
                        e
                    } else {
                        self.err_at(cmd, format!("error calling {f}: {}", e.0))
                    }
                })
            }
            Some(a) => {
                if cmd.args.len() > 1 || piped.is_some() {
                    return Err(self.err(format!("can't give argument to non-function {}", describe(a))));
                }
                self.eval_arg(a, dot)
            }
            None => Err(self.err("empty command")),
        }
    }

    fn call(&mut self, f: &str, args: Vec<Val>) -> Result<Val, TemplateError> {
        let e = |m: String| TemplateError(m);
        let want = |n: usize| -> Result<(), TemplateError> {
            if args.len() == n {
                Ok(())
            } else {
                Err(TemplateError(format!("wrong number of args for {f}: want {n} got {}", args.len())))
            }
        };
        Ok(match f {
            "not" => {
                want(1)?;
                Val::Bool(!args[0].truth())
            }
            "len" => {
                want(1)?;
                match &args[0] {
                    Val::Str(s) => Val::Int(s.len() as i64),
                    Val::Map(m) => Val::Int(m.len() as i64),
                    Val::AnyMap(m) => Val::Int(m.len() as i64),
                    Val::Samples(s) => Val::Int(s.len() as i64),
                    other => return Err(e(format!("len of type {}", other.type_name()))),
                }
            }
            "index" => {
                let Some((first, keys)) = args.split_first() else { return Err(e("index of untyped nil".into())) };
                let mut cur = first.clone();
                for k in keys {
                    cur = match (&cur, k) {
                        (Val::Map(m), Val::Str(k)) => Val::Str(m.get(k).cloned().unwrap_or_default()),
                        (Val::AnyMap(m), Val::Str(k)) => m.get(k).cloned().unwrap_or(Val::Nil),
                        (Val::Samples(s), Val::Int(i)) => {
                            let x = usize::try_from(*i)
                                .ok()
                                .and_then(|i| s.get(i))
                                .ok_or_else(|| e(format!("error calling index: index out of range: {i}")))?;
                            Val::Sample(Arc::new(x.clone()))
                        }
                        (c, k) => {
                            return Err(e(format!(
                                "can't index item of type {} with {}",
                                c.type_name(),
                                k.type_name()
                            )));
                        }
                    };
                }
                cur
            }
            "print" => Val::Str(go_sprint(&args)),
            "println" => {
                let mut s = args.iter().map(Val::to_display).collect::<Vec<_>>().join(" ");
                s.push('\n');
                Val::Str(s)
            }
            "printf" => {
                let Some((Val::Str(fmt), rest)) = args.split_first() else {
                    return Err(e("printf: format must be a string".into()));
                };
                Val::Str(go_sprintf(fmt, rest))
            }
            "eq" => {
                let Some((a, rest)) = args.split_first() else {
                    return Err(e("missing argument for comparison".into()));
                };
                if rest.is_empty() {
                    return Err(e("missing argument for comparison".into()));
                }
                let mut any = false;
                for b in rest {
                    if compare(a, b)? == std::cmp::Ordering::Equal {
                        any = true;
                    }
                }
                Val::Bool(any)
            }
            "ne" | "lt" | "le" | "gt" | "ge" => {
                want(2)?;
                let o = compare(&args[0], &args[1])?;
                if f != "ne" && !matches!((&args[0], &args[1]), (Val::Int(_) | Val::Float(_) | Val::Str(_), _)) {
                    return Err(e("invalid type for comparison".into()));
                }
                Val::Bool(match f {
                    "ne" => o != std::cmp::Ordering::Equal,
                    "lt" => o == std::cmp::Ordering::Less,
                    "le" => o != std::cmp::Ordering::Greater,
                    "gt" => o == std::cmp::Ordering::Greater,
                    _ => o != std::cmp::Ordering::Less,
                })
            }
            "html" | "safeHtml" => {
                let s = go_sprint(&args);
                if f == "safeHtml" { Val::Str(s) } else { Val::Str(html_escape(&s)) }
            }
            "js" => Val::Str(go_sprint(&args).replace('\\', "\\\\").replace('\'', "\\'").replace('"', "\\\"")),
            "urlquery" => Val::Str(query_escape(&go_sprint(&args))),
            "query" => {
                want(1)?;
                let q = as_str(&args[0], f)?;
                let res = (self.ctx.query)(&q).map_err(e)?;
                Val::Samples(Arc::new(res))
            }
            "first" => {
                want(1)?;
                match &args[0] {
                    Val::Samples(s) => match s.first() {
                        Some(x) => Val::Sample(Arc::new(x.clone())),
                        None => return Err(e("first() called on vector with no elements".into())),
                    },
                    other => {
                        return Err(e(format!(
                            "wrong type for value; expected template.queryResult; got {}",
                            other.type_name()
                        )));
                    }
                }
            }
            "label" => {
                want(2)?;
                let name = as_str(&args[0], f)?;
                match &args[1] {
                    Val::Sample(s) => Val::Str(s.labels.get(&name).cloned().unwrap_or_default()),
                    Val::Nil | Val::Missing => Val::Str(String::new()),
                    other => {
                        return Err(e(format!(
                            "wrong type for value; expected *template.sample; got {}",
                            other.type_name()
                        )));
                    }
                }
            }
            "value" | "strvalue" => {
                want(1)?;
                match &args[0] {
                    Val::Sample(s) if f == "value" => Val::Float(s.value),
                    Val::Sample(s) => Val::Str(s.labels.get("__value__").cloned().unwrap_or_default()),
                    other => {
                        return Err(e(format!(
                            "wrong type for value; expected *template.sample; got {}",
                            other.type_name()
                        )));
                    }
                }
            }
            "args" => Val::AnyMap(args.into_iter().enumerate().map(|(i, v)| (format!("arg{i}"), v)).collect()),
            "reReplaceAll" => {
                want(3)?;
                let (p, r, t) = (as_str(&args[0], f)?, as_str(&args[1], f)?, as_str(&args[2], f)?);
                let re = regex::Regex::new(&p).map_err(|err| e(format!("regexp: Compile({p:?}): {err}")))?;
                Val::Str(re.replace_all(&t, r.as_str()).into_owned())
            }
            "match" => {
                want(2)?;
                let (p, t) = (as_str(&args[0], f)?, as_str(&args[1], f)?);
                let re = regex::Regex::new(&p).map_err(|err| e(format!("error parsing regexp: {err}")))?;
                Val::Bool(re.is_match(&t))
            }
            "title" => {
                want(1)?;
                Val::Str(go_title(&as_str(&args[0], f)?))
            }
            "toUpper" => {
                want(1)?;
                Val::Str(as_str(&args[0], f)?.to_uppercase())
            }
            "toLower" => {
                want(1)?;
                Val::Str(as_str(&args[0], f)?.to_lowercase())
            }
            "graphLink" | "tableLink" => {
                want(1)?;
                let q = query_escape(&as_str(&args[0], f)?);
                Val::Str(if f == "graphLink" {
                    format!("/graph?g0.expr={q}&g0.tab=0")
                } else {
                    format!("/graph?g0.expr={q}&g0.tab=1")
                })
            }
            "sortByLabel" => {
                want(2)?;
                let name = as_str(&args[0], f)?;
                match &args[1] {
                    Val::Samples(s) => {
                        let mut v = (**s).clone();
                        v.sort_by(|a, b| a.labels.get(&name).cmp(&b.labels.get(&name)));
                        Val::Samples(Arc::new(v))
                    }
                    other => {
                        return Err(e(format!(
                            "wrong type for value; expected template.queryResult; got {}",
                            other.type_name()
                        )));
                    }
                }
            }
            "humanize" => {
                want(1)?;
                Val::Str(humanize(to_float(&args[0])?))
            }
            "humanize1024" => {
                want(1)?;
                Val::Str(humanize1024(to_float(&args[0])?))
            }
            "humanizeDuration" => {
                want(1)?;
                Val::Str(humanize_duration(to_float(&args[0])?))
            }
            "humanizePercentage" => {
                want(1)?;
                Val::Str(format!("{}%", format_prec_g(to_float(&args[0])? * 100.0, 4)))
            }
            "humanizeTimestamp" => {
                want(1)?;
                let v = to_float(&args[0])?;
                if v.is_nan() || v.is_infinite() {
                    Val::Str(format_prec_g(v, 4))
                } else {
                    // model.TimeFromUnixNano(int64(v * 1e9)): milliseconds.
                    let ns = (v * 1e9) as i64;
                    Val::Str(time_string(ns.div_euclid(1_000_000)))
                }
            }
            "toTime" => {
                want(1)?;
                let v = to_float(&args[0])?;
                let ns = (v * 1e9) as i64;
                Val::Str(time_string(ns.div_euclid(1_000_000)))
            }
            "parseDuration" => {
                want(1)?;
                let s = as_str(&args[0], f)?;
                let d = strata_common::parse_duration(&s).map_err(|err| e(err.to_string()))?;
                Val::Float(d.as_secs_f64())
            }
            "externalURL" => Val::Str(self.ctx.external_url.clone()),
            "pathPrefix" => {
                let path = self
                    .ctx
                    .external_url
                    .split_once("://")
                    .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_owned()))
                    .unwrap_or_default();
                Val::Str(path)
            }
            "stripPort" => {
                want(1)?;
                Val::Str(strip_port(&as_str(&args[0], f)?))
            }
            "stripDomain" => {
                want(1)?;
                let s = as_str(&args[0], f)?;
                let host = strip_port(&s);
                let port = s.strip_prefix(&host).unwrap_or("");
                if host.parse::<std::net::IpAddr>().is_ok() {
                    Val::Str(s)
                } else {
                    let short = host.split('.').next().unwrap_or("").to_owned();
                    Val::Str(short + port)
                }
            }
            "slice" | "call" | "tmpl" => return Err(e(format!("{f} is not supported"))),
            other => return Err(e(format!("function \"{other}\" not defined"))),
        })
    }
}

fn describe(a: &Arg) -> String {
    match a {
        Arg::Field(c) => format!(".{}", c.join(".")),
        Arg::Var(n, c) if c.is_empty() => n.clone(),
        Arg::Var(n, c) => format!("{n}.{}", c.join(".")),
        Arg::Str(s) => format!("{s:?}"),
        Arg::Int(i) => i.to_string(),
        Arg::Float(f) => format_v(*f),
        Arg::Bool(b) => b.to_string(),
        Arg::Nil => "nil".into(),
        Arg::Pipe(..) => "(pipeline)".into(),
        Arg::Func(f) => f.clone(),
    }
}

fn as_str(v: &Val, f: &str) -> Result<String, TemplateError> {
    match v {
        Val::Str(s) => Ok(s.clone()),
        other => {
            Err(TemplateError(format!("wrong type for value; expected string; got {} (in {f})", other.type_name())))
        }
    }
}

/// Prometheus' `convertToFloat`.
fn to_float(v: &Val) -> Result<f64, TemplateError> {
    match v {
        Val::Float(f) => Ok(*f),
        Val::Int(i) => Ok(*i as f64),
        Val::Str(s) => s
            .trim()
            .parse::<f64>()
            .or_else(|_| go_parse_float(s))
            .map_err(|_| TemplateError(format!("strconv.ParseFloat: parsing {s:?}: invalid syntax"))),
        other => Err(TemplateError(format!("can't convert {} to float", other.type_name()))),
    }
}

fn go_parse_float(s: &str) -> Result<f64, ()> {
    match s {
        "+Inf" | "Inf" | "inf" | "+inf" => Ok(f64::INFINITY),
        "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
        "NaN" | "nan" => Ok(f64::NAN),
        _ => Err(()),
    }
}

/// Go's `basicKind` comparison, as `eq`/`lt`/... do it.
fn compare(a: &Val, b: &Val) -> Result<std::cmp::Ordering, TemplateError> {
    use std::cmp::Ordering;
    let bad = || TemplateError("incompatible types for comparison".into());
    Ok(match (a, b) {
        (Val::Int(x), Val::Int(y)) => x.cmp(y),
        (Val::Float(x), Val::Float(y)) => x.partial_cmp(y).unwrap_or(Ordering::Less),
        (Val::Str(x), Val::Str(y)) => x.cmp(y),
        (Val::Bool(x), Val::Bool(y)) => {
            if x == y {
                Ordering::Equal
            } else {
                Ordering::Less
            }
        }
        (Val::Nil, Val::Nil) => Ordering::Equal,
        (Val::Missing, _) | (_, Val::Missing) => {
            return Err(TemplateError("invalid type for comparison".into()));
        }
        _ => return Err(bad()),
    })
}

/// `fmt.Sprint`: spaces between operands when neither is a string.
fn go_sprint(args: &[Val]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 && !matches!(a, Val::Str(_)) && !matches!(args[i - 1], Val::Str(_)) {
            out.push(' ');
        }
        a.print(&mut out);
    }
    out
}

/// `fmt.Sprintf` for the verbs templates use: `%v %s %d %f %g %e %q %x %t %%`
/// with width, precision and the `-`, `+`, `0` flags.
fn go_sprintf(fmt: &str, args: &[Val]) -> String {
    let mut out = String::new();
    let mut it = fmt.chars().peekable();
    let mut argi = 0;
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let (mut minus, mut plus, mut zero) = (false, false, false);
        while let Some(&f) = it.peek() {
            match f {
                '-' => minus = true,
                '+' => plus = true,
                '0' => zero = true,
                ' ' | '#' => {}
                _ => break,
            }
            it.next();
        }
        let mut width = String::new();
        while let Some(&d) = it.peek().filter(|d| d.is_ascii_digit()) {
            width.push(d);
            it.next();
        }
        let mut prec: Option<usize> = None;
        if it.peek() == Some(&'.') {
            it.next();
            let mut p = String::new();
            while let Some(&d) = it.peek().filter(|d| d.is_ascii_digit()) {
                p.push(d);
                it.next();
            }
            prec = Some(p.parse().unwrap_or(0));
        }
        let Some(verb) = it.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(argi) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        argi += 1;
        let mut s = match (verb, arg) {
            ('v', a) | ('s', a @ Val::Str(_)) => a.to_display(),
            ('s', a) => a.to_display(),
            ('d', Val::Int(i)) => i.to_string(),
            ('d', Val::Float(f)) => format!("%!d(float64={})", format_v(*f)),
            ('f' | 'F', Val::Float(f)) => format_prec_f(*f, prec.unwrap_or(6)),
            ('f' | 'F', Val::Int(i)) => format!("%!f(int={i})"),
            ('g', Val::Float(f)) => match prec {
                Some(p) => format_prec_g(*f, p),
                None => format_v(*f),
            },
            ('e', Val::Float(f)) => format_prec_e(*f, prec.unwrap_or(6)),
            ('q', Val::Str(s)) => format!("{s:?}"),
            ('x', Val::Int(i)) => format!("{i:x}"),
            ('x', Val::Str(s)) => s.bytes().map(|b| format!("{b:02x}")).collect(),
            ('t', Val::Bool(b)) => b.to_string(),
            (v, a) => format!("%!{v}({}={})", a.type_name(), a.to_display()),
        };
        if plus && matches!(arg, Val::Int(_) | Val::Float(_)) && !s.starts_with('-') {
            s.insert(0, '+');
        }
        if let Ok(w) = width.parse::<usize>() {
            let len = s.chars().count();
            if len < w {
                let pad = w - len;
                if minus {
                    s.push_str(&" ".repeat(pad));
                } else if zero && matches!(arg, Val::Int(_) | Val::Float(_)) {
                    let neg = s.starts_with('-') || s.starts_with('+');
                    let at = usize::from(neg);
                    s.insert_str(at, &"0".repeat(pad));
                } else {
                    s.insert_str(0, &" ".repeat(pad));
                }
            }
        }
        out.push_str(&s);
    }
    if argi < args.len() {
        out.push_str("%!(EXTRA ");
        let extra: Vec<String> = args[argi..].iter().map(|a| format!("{}={}", a.type_name(), a.to_display())).collect();
        out.push_str(&extra.join(", "));
        out.push(')');
    }
    out
}

/// Prometheus' `humanize`.
pub fn humanize(mut v: f64) -> String {
    if v == 0.0 || v.is_nan() || v.is_infinite() {
        return format_prec_g(v, 4);
    }
    let mut prefix = "";
    if v.abs() >= 1.0 {
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"] {
            if v.abs() < 1000.0 {
                break;
            }
            prefix = p;
            v /= 1000.0;
        }
        return format!("{}{prefix}", format_prec_g(v, 4));
    }
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    format!("{}{prefix}", format_prec_g(v, 4))
}

/// Prometheus' `humanize1024`.
pub fn humanize1024(mut v: f64) -> String {
    if v.abs() <= 1.0 || v.is_nan() || v.is_infinite() {
        return format_prec_g(v, 4);
    }
    let mut prefix = "";
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
        if v.abs() < 1024.0 {
            break;
        }
        prefix = p;
        v /= 1024.0;
    }
    format!("{}{prefix}", format_prec_g(v, 4))
}

/// Prometheus' `humanizeDuration`.
pub fn humanize_duration(mut v: f64) -> String {
    if v.is_nan() || v.is_infinite() {
        return format_prec_g(v, 4);
    }
    if v == 0.0 {
        return format!("{}s", format_prec_g(v, 4));
    }
    if v.abs() >= 1.0 {
        let mut sign = "";
        if v < 0.0 {
            sign = "-";
            v = -v;
        }
        let d = v as i64;
        let (s, m, h, days) = (d % 60, (d / 60) % 60, (d / 3600) % 24, d / 86_400);
        if days != 0 {
            return format!("{sign}{days}d {h}h {m}m {s}s");
        }
        if h != 0 {
            return format!("{sign}{h}h {m}m {s}s");
        }
        if m != 0 {
            return format!("{sign}{m}m {s}s");
        }
        return format!("{sign}{}s", format_prec_g(v, 4));
    }
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    format!("{}{prefix}s", format_prec_g(v, 4))
}

/// Go's deprecated `strings.Title`: upper-cases the first letter of each word.
fn go_title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_sep = true;
    for c in s.chars() {
        if prev_sep {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev_sep = !(c.is_alphanumeric() || c == '_');
    }
    out
}

fn strip_port(s: &str) -> String {
    // net.SplitHostPort: "host:port" or "[v6]:port".
    if let Some(rest) = s.strip_prefix('[')
        && let Some((host, port)) = rest.split_once("]:")
        && !port.contains(':')
    {
        return host.to_owned();
    }
    match s.rsplit_once(':') {
        Some((host, _)) if !host.contains(':') && !host.contains('[') => host.to_owned(),
        _ => s.to_owned(),
    }
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&#39;"),
            '"' => out.push_str("&#34;"),
            '\0' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Go's `url.QueryEscape`.
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(char::from(b)),
            b' ' => out.push('+'),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(text: &str, value: f64) -> Result<String, TemplateError> {
        let data = TemplateData {
            labels: [("instance".to_owned(), "host:9100".to_owned()), ("job".to_owned(), "node".to_owned())]
                .into_iter()
                .collect(),
            external_labels: [("cluster".to_owned(), "eu1".to_owned())].into_iter().collect(),
            external_url: "http://prom.example:9090/prefix".into(),
            value,
        };
        let mut q = |expr: &str| -> Result<Vec<QuerySample>, String> {
            if expr == "empty" {
                return Ok(Vec::new());
            }
            Ok(vec![
                QuerySample { labels: [("a".to_owned(), "2".to_owned())].into_iter().collect(), value: 2.5 },
                QuerySample { labels: [("a".to_owned(), "1".to_owned())].into_iter().collect(), value: 1.0 },
            ])
        };
        let mut ctx = ExecContext { query: &mut q, external_url: "http://prom.example:9090/prefix".into() };
        expand("__alert_Test", text, &data, &mut ctx)
    }

    #[test]
    fn variables_and_value() {
        assert_eq!(render("{{ $labels.instance }} is {{ $value }}", 0.5).expect("ok"), "host:9100 is 0.5");
        assert_eq!(render("{{ $labels.missing }}", 1.0).expect("ok"), "<no value>");
        assert_eq!(
            render("{{ $externalLabels.cluster }} {{ $externalURL }}", 1.0).expect("ok"),
            "eu1 http://prom.example:9090/prefix"
        );
        assert_eq!(render("{{ .Labels.job }} {{ .Value }}", 123456789.0).expect("ok"), "node 1.23456789e+08");
    }

    #[test]
    fn humanize_family() {
        assert_eq!(render("{{ humanize $value }}", 1234567.0).expect("ok"), "1.235M");
        assert_eq!(render("{{ $value | humanize }}", 0.001234).expect("ok"), "1.234m");
        assert_eq!(render("{{ humanize 0 }}", 0.0).expect("ok"), "0");
        assert_eq!(render("{{ humanize1024 $value }}", 1048576.0).expect("ok"), "1Mi");
        assert_eq!(render("{{ humanizeDuration $value }}", 90061.0).expect("ok"), "1d 1h 1m 1s");
        assert_eq!(render("{{ humanizeDuration $value }}", 1.5).expect("ok"), "1.5s");
        assert_eq!(render("{{ humanizeDuration $value }}", 0.0015).expect("ok"), "1.5ms");
        assert_eq!(render("{{ humanizePercentage $value }}", 0.12345).expect("ok"), "12.35%");
        assert_eq!(
            render("{{ humanizeTimestamp $value }}", 1435065584.128).expect("ok"),
            "2015-06-23 13:19:44.128 +0000 UTC"
        );
        assert_eq!(render("{{ humanize \"1000\" }}", 0.0).expect("ok"), "1k");
    }

    #[test]
    fn control_flow() {
        assert_eq!(render("{{ if gt $value 1.0 }}big{{ else }}small{{ end }}", 2.0).expect("ok"), "big");
        assert_eq!(
            render("{{ if gt $value 1.0 }}big{{ else if eq $value 1.0 }}one{{ else }}small{{ end }}", 1.0).expect("ok"),
            "one"
        );
        assert_eq!(
            render("{{ range $k, $v := $labels }}{{ $k }}={{ $v }},{{ end }}", 1.0).expect("ok"),
            "instance=host:9100,job=node,"
        );
        assert_eq!(render("{{ with $labels.job }}job {{ . }}{{ end }}", 1.0).expect("ok"), "job node");
        assert_eq!(render("a  {{- \" b \" -}}  c", 1.0).expect("ok"), "a b c");
        assert_eq!(render("{{/* comment */}}x", 1.0).expect("ok"), "x");
        assert_eq!(render("{{ $x := 3 }}{{ $x }}", 1.0).expect("ok"), "3");
    }

    #[test]
    fn int_float_comparison_fails_as_go() {
        let err = render("{{ if gt $value 1 }}x{{ end }}", 2.0).expect_err("incompatible");
        assert_eq!(
            err.0,
            "error executing template __alert_Test: template: __alert_Test:1:118: executing \"__alert_Test\" at <gt $value 1>: error calling gt: incompatible types for comparison"
        );
        let err = render("a\n {{ query \"empty\" | first | value }}", 2.0).expect_err("empty");
        assert_eq!(
            err.0,
            "error executing template __alert_Test: template: __alert_Test:2:20: executing \"__alert_Test\" at <first>: error calling first: first() called on vector with no elements"
        );
    }

    #[test]
    fn query_functions() {
        assert_eq!(render("{{ query \"x\" | first | value }}", 0.0).expect("ok"), "2.5");
        assert_eq!(render("{{ with query \"x\" }}{{ . | first | label \"a\" }}{{ end }}", 0.0).expect("ok"), "2");
        assert_eq!(
            render("{{ range query \"x\" | sortByLabel \"a\" }}{{ .Labels.a }}:{{ .Value }} {{ end }}", 0.0)
                .expect("ok"),
            "1:1 2:2.5 "
        );
        assert!(
            render("{{ query \"empty\" | first | value }}", 0.0)
                .expect_err("empty")
                .0
                .contains("first() called on vector with no elements")
        );
    }

    #[test]
    fn string_functions() {
        assert_eq!(render("{{ printf \"%.2f %s %d\" $value \"x\" 3 }}", 1.0 / 3.0).expect("ok"), "0.33 x 3");
        assert_eq!(
            render("{{ \"hello world\" | title }} {{ toUpper \"a\" }} {{ toLower \"B\" }}", 0.0).expect("ok"),
            "Hello World A b"
        );
        assert_eq!(render("{{ reReplaceAll \"(.*):(.*)\" \"$2\" $labels.instance }}", 0.0).expect("ok"), "9100");
        assert_eq!(render("{{ match \"^host\" $labels.instance }}", 0.0).expect("ok"), "true");
        assert_eq!(
            render("{{ stripPort $labels.instance }} {{ stripPort \"[::1]:80\" }}", 0.0).expect("ok"),
            "host ::1"
        );
        assert_eq!(render("{{ safeHtml \"<b>\" }} {{ html \"<b>\" }}", 0.0).expect("ok"), "<b> &lt;b&gt;");
        assert_eq!(render("{{ with args 1 \"x\" }}{{ .arg0 }}{{ .arg1 }}{{ end }}", 0.0).expect("ok"), "1x");
        assert_eq!(
            render("{{ pathPrefix }} {{ externalURL }}", 0.0).expect("ok"),
            "/prefix http://prom.example:9090/prefix"
        );
        assert_eq!(render("{{ tableLink \"up == 0\" }}", 0.0).expect("ok"), "/graph?g0.expr=up+%3D%3D+0&g0.tab=1");
    }

    #[test]
    fn parse_errors() {
        assert!(
            Template::parse("t", "{{ nosuchfunc }}")
                .expect_err("undefined")
                .0
                .contains("function \"nosuchfunc\" not defined")
        );
        assert!(Template::parse("t", "{{ $nosuch }}").expect_err("undefined").0.contains("undefined variable"));
        assert!(Template::parse("t", "{{ if 1 }}").expect_err("eof").0.contains("unexpected EOF"));
        assert!(Template::parse("t", "{{ end }}").is_err());
        assert!(Template::parse("t", "{{ \"x }}").is_err());
    }
}
