//! `--format`: the part of Go's text/template that Docker users write for `ps`,
//! `inspect`, `images`, `version`, `events` and `stats`, evaluated against the JSON
//! form of what the command prints, plus Docker's `json` and `table` conventions.

use std::fmt::Write as _;

use serde_json::{Map, Number, Value};

/// Why a template did not parse or render.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template: unclosed action")]
    UnclosedAction,
    #[error("template: unknown function {0:?}")]
    UnknownFunction(String),
    #[error("template: can't evaluate field {0}")]
    NoField(String),
    #[error("template: can't evaluate field {field} in type {kind}")]
    FieldOfNonObject { field: String, kind: &'static str },
    #[error("template: undefined variable ${0}")]
    UndefinedVariable(String),
    #[error("template: {0}")]
    Syntax(String),
    #[error("template: {0}")]
    Exec(String),
}

type Result<T> = std::result::Result<T, TemplateError>;

fn syntax<T>(msg: impl Into<String>) -> Result<T> {
    Err(TemplateError::Syntax(msg.into()))
}

fn exec<T>(msg: impl Into<String>) -> Result<T> {
    Err(TemplateError::Exec(msg.into()))
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
}

/// What `--format` asked for.
#[derive(Debug, Clone)]
pub enum Format {
    /// One compact JSON document per item.
    Json,
    /// Aligned columns under a header row; the template renders one row.
    Table(Template),
    /// The template once per item, one line each.
    Template(Template),
}

/// Reads `--format` the way Docker does: `json`, `table [TEMPLATE]`, or a template.
/// A bare `table` gives an empty row template; use [`parse_format_or`] to supply the
/// command's default columns.
pub fn parse_format(s: &str) -> Result<Format> {
    let s = s.trim_matches(' ');
    if s == "json" {
        return Ok(Format::Json);
    }
    match s.strip_prefix("table") {
        Some(row) if row.is_empty() || row.starts_with([' ', '\t', '{']) => {
            Ok(Format::Table(Template::parse(row.trim_matches(' '))?))
        }
        _ => Ok(Format::Template(Template::parse(s)?)),
    }
}

/// [`parse_format`], with `""` and a bare `table` meaning `table DEFAULT_ROW`.
pub fn parse_format_or(s: &str, default_row: &str) -> Result<Format> {
    match s.trim_matches(' ') {
        "" | "table" => Ok(Format::Table(Template::parse(default_row)?)),
        _ => parse_format(s),
    }
}

impl Format {
    /// Renders every item; `headers` names table columns by field (`("ID", "CONTAINER ID")`).
    pub fn render(&self, items: &[Value], headers: &[(&str, &str)]) -> Result<String> {
        let mut out = String::new();
        match self {
            Format::Json => {
                for item in items {
                    out.push_str(&item.to_string());
                    out.push('\n');
                }
            }
            Format::Template(t) => {
                for item in items {
                    out.push_str(&t.render(item)?);
                    out.push('\n');
                }
            }
            Format::Table(t) => {
                let split = |line: String| -> Vec<String> {
                    line.split('\t').map(str::to_string).collect()
                };
                let mut rows: Vec<Vec<String>> = vec![split(t.header(headers))];
                for item in items {
                    rows.push(split(t.render(item)?));
                }
                out = table(&rows);
            }
        }
        Ok(out)
    }
}

// Docker's tabwriter: minimum cell width 10, padding 3.
const MIN_WIDTH: usize = 10;
const PADDING: usize = 3;

/// Aligns cells into columns the way Docker's tabwriter does: each column as wide as
/// its widest cell plus 3 spaces (at least 10); the last cell of a row is not padded.
pub fn table(rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
            let w = (cell.chars().count() + PADDING).max(MIN_WIDTH);
            match widths.get_mut(i) {
                Some(cur) => *cur = (*cur).max(w),
                None => widths.push(w),
            }
        }
    }
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i] - cell.chars().count();
                out.push_str(&" ".repeat(pad));
            }
        }
        out.push('\n');
    }
    out
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Vec<String>, Pipe),
    If(Vec<(Vec<String>, Pipe, Vec<Node>)>, Vec<Node>),
    Range(Vec<String>, Pipe, Vec<Node>, Vec<Node>),
    With(Vec<String>, Pipe, Vec<Node>, Vec<Node>),
}

type Pipe = Vec<Vec<Arg>>;

#[derive(Debug, Clone)]
enum Arg {
    Dot,
    Field(Vec<String>),
    Var(String, Vec<String>),
    Lit(Value),
    Func(String),
    Sub(Pipe),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Dot,
    Field(Vec<String>),
    Var(String, Vec<String>),
    Ident(String),
    Lit(Value),
    Pipe,
    Open,
    Close,
    Comma,
    Declare,
}

enum Item {
    Text(String),
    Action(Vec<Tok>),
}

const FUNCS: &[&str] = &[
    "json", "upper", "lower", "title", "join", "index", "len", "printf", "println", "split",
    "truncate", "pad", "eq", "ne", "lt", "le", "gt", "ge", "and", "or", "not",
];

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Docker turns a literal backslash-t or backslash-n in the format into tab/newline.
fn unescape_text(s: &str) -> String {
    s.replace("\\t", "\t").replace("\\n", "\n")
}

fn lex(src: &str) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    loop {
        let (text, action) = match rest.find("{{") {
            Some(i) => (&rest[..i], Some(&rest[i + 2..])),
            None => (rest, None),
        };
        let mut text = unescape_text(text);
        if trim_next {
            text = text.trim_start_matches(is_space).to_string();
        }
        let Some(mut action) = action else {
            if !text.is_empty() {
                items.push(Item::Text(text));
            }
            return Ok(items);
        };
        if action.starts_with('-') && action[1..].starts_with(is_space) {
            text = text.trim_end_matches(is_space).to_string();
            action = &action[1..];
        }
        if !text.is_empty() {
            items.push(Item::Text(text));
        }
        let (toks, used, trim) = lex_action(action)?;
        items.push(Item::Action(toks));
        rest = &action[used..];
        trim_next = trim;
    }
}

/// Tokens of one action, the bytes it used including `}}`, and whether it ends `-}}`.
fn lex_action(s: &str) -> Result<(Vec<Tok>, usize, bool)> {
    let b = s.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    let ident_end = |from: usize| {
        s[from..]
            .find(|c: char| !is_ident(c))
            .map_or(s.len(), |n| from + n)
    };
    let chain = |mut i: usize| {
        let mut names = Vec::new();
        while b.get(i) == Some(&b'.') && s[i + 1..].starts_with(|c: char| is_ident(c)) {
            let end = ident_end(i + 1);
            names.push(s[i + 1..end].to_string());
            i = end;
        }
        (names, i)
    };
    loop {
        let Some(c) = s[i..].chars().next() else {
            return Err(TemplateError::UnclosedAction);
        };
        if is_space(c) {
            if s[i + 1..].starts_with("-}}") {
                return Ok((toks, i + 4, true));
            }
            i += 1;
            continue;
        }
        if s[i..].starts_with("}}") {
            return Ok((toks, i + 2, false));
        }
        let start = i;
        i += c.len_utf8();
        let tok = match c {
            '|' => Tok::Pipe,
            '(' => Tok::Open,
            ')' => Tok::Close,
            ',' => Tok::Comma,
            ':' if b.get(i) == Some(&b'=') => {
                i += 1;
                Tok::Declare
            }
            '"' => {
                let (lit, used) = unquote(&s[i..])?;
                i += used;
                Tok::Lit(Value::String(lit))
            }
            '`' => {
                let end = s[i..].find('`').ok_or(TemplateError::UnclosedAction)?;
                let lit = s[i..i + end].to_string();
                i += end + 1;
                Tok::Lit(Value::String(lit))
            }
            '.' => {
                let (names, end) = chain(start);
                i = end.max(i);
                if names.is_empty() {
                    Tok::Dot
                } else {
                    Tok::Field(names)
                }
            }
            '$' => {
                let end = ident_end(i);
                let name = s[i..end].to_string();
                let (names, end) = chain(end);
                i = end;
                Tok::Var(name, names)
            }
            '0'..='9' | '-' | '+' => {
                let end = s[i..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || "._+-".contains(c)))
                    .map_or(s.len(), |n| i + n);
                let text = &s[start..end];
                i = end;
                let num = text
                    .parse::<i64>()
                    .map(Number::from)
                    .ok()
                    .or_else(|| text.parse::<f64>().ok().and_then(Number::from_f64));
                Tok::Lit(Value::Number(num.ok_or_else(|| {
                    TemplateError::Syntax(format!("bad number {text:?}"))
                })?))
            }
            c if is_ident(c) => {
                let end = ident_end(start);
                i = end;
                match &s[start..end] {
                    "true" => Tok::Lit(Value::Bool(true)),
                    "false" => Tok::Lit(Value::Bool(false)),
                    "nil" => Tok::Lit(Value::Null),
                    word => Tok::Ident(word.to_string()),
                }
            }
            c => return syntax(format!("unexpected {c:?} in action")),
        };
        toks.push(tok);
    }
}

/// Reads a Go double-quoted string body (after the opening quote).
fn unquote(s: &str) -> Result<(String, usize)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, i + 1)),
            '\n' => break,
            '\\' => match chars.next().map(|(_, e)| e) {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some(e @ ('\\' | '"' | '\'')) => out.push(e),
                e => return syntax(format!("unknown escape {e:?} in string")),
            },
            c => out.push(c),
        }
    }
    syntax("unterminated quoted string")
}

struct Parser {
    items: std::vec::IntoIter<Item>,
}

/// The `{{end}}` or `{{else …}}` that stopped a list.
enum Stop {
    End,
    Else(Vec<Tok>),
}

impl Parser {
    fn list(&mut self) -> Result<(Vec<Node>, Option<Stop>)> {
        let mut nodes = Vec::new();
        while let Some(item) = self.items.next() {
            let toks = match item {
                Item::Text(t) => {
                    nodes.push(Node::Text(t));
                    continue;
                }
                Item::Action(toks) => toks,
            };
            let (word, rest) = match toks.first() {
                Some(Tok::Ident(w)) => (w.as_str(), &toks[1..]),
                _ => ("", &toks[..]),
            };
            let node = match word {
                "end" if rest.is_empty() => return Ok((nodes, Some(Stop::End))),
                "end" => return syntax("unexpected tokens after end"),
                "else" => return Ok((nodes, Some(Stop::Else(rest.to_vec())))),
                "if" => self.parse_if(rest)?,
                "range" | "with" => {
                    let (vars, pipe) = pipeline(rest)?;
                    let (body, stop) = self.list()?;
                    let alt = match stop {
                        Some(Stop::End) => Vec::new(),
                        Some(Stop::Else(t)) if t.is_empty() => self.end_list()?,
                        Some(Stop::Else(_)) => return syntax(format!("unexpected else in {word}")),
                        None => return syntax(format!("unexpected EOF: {word} without end")),
                    };
                    if word == "range" {
                        Node::Range(vars, pipe, body, alt)
                    } else {
                        Node::With(vars, pipe, body, alt)
                    }
                }
                _ => {
                    let (vars, pipe) = pipeline(&toks)?;
                    Node::Action(vars, pipe)
                }
            };
            nodes.push(node);
        }
        Ok((nodes, None))
    }

    fn end_list(&mut self) -> Result<Vec<Node>> {
        match self.list()? {
            (nodes, Some(Stop::End)) => Ok(nodes),
            (_, Some(Stop::Else(_))) => syntax("else after else"),
            (_, None) => syntax("unexpected EOF: missing end"),
        }
    }

    fn parse_if(&mut self, cond: &[Tok]) -> Result<Node> {
        let mut branches = Vec::new();
        let mut cond = cond.to_vec();
        loop {
            let (vars, pipe) = pipeline(&cond)?;
            let (body, stop) = self.list()?;
            branches.push((vars, pipe, body));
            match stop {
                Some(Stop::End) => return Ok(Node::If(branches, Vec::new())),
                Some(Stop::Else(t)) if t.is_empty() => {
                    return Ok(Node::If(branches, self.end_list()?));
                }
                Some(Stop::Else(t)) if t.first() == Some(&Tok::Ident("if".into())) => {
                    cond = t[1..].to_vec();
                }
                Some(Stop::Else(_)) => return syntax("else may only be followed by if"),
                None => return syntax("unexpected EOF: if without end"),
            }
        }
    }
}

/// An action's optional `$a, $b :=` declarations and its pipeline.
fn pipeline(toks: &[Tok]) -> Result<(Vec<String>, Pipe)> {
    let decl = |t: &[Tok]| match t {
        [Tok::Var(a, f), Tok::Declare, ..] if f.is_empty() => Some((vec![a.clone()], 2)),
        [Tok::Var(a, f), Tok::Comma, Tok::Var(b, g), Tok::Declare, ..]
            if f.is_empty() && g.is_empty() =>
        {
            Some((vec![a.clone(), b.clone()], 4))
        }
        _ => None,
    };
    let (vars, skip) = decl(toks).unwrap_or_default();
    Ok((vars, commands(&toks[skip..])?))
}

fn commands(toks: &[Tok]) -> Result<Pipe> {
    let mut pipe: Pipe = vec![Vec::new()];
    let mut i = 0;
    while i < toks.len() {
        let arg = match &toks[i] {
            Tok::Pipe => {
                pipe.push(Vec::new());
                i += 1;
                continue;
            }
            Tok::Open => {
                let mut depth = 0;
                let close = (i..toks.len())
                    .find(|&j| {
                        match toks[j] {
                            Tok::Open => depth += 1,
                            Tok::Close => depth -= 1,
                            _ => {}
                        }
                        depth == 0
                    })
                    .ok_or_else(|| TemplateError::Syntax("unclosed left paren".into()))?;
                let sub = commands(&toks[i + 1..close])?;
                i = close;
                Arg::Sub(sub)
            }
            Tok::Dot => Arg::Dot,
            Tok::Field(f) => Arg::Field(f.clone()),
            Tok::Var(n, f) => Arg::Var(n.clone(), f.clone()),
            Tok::Lit(v) => Arg::Lit(v.clone()),
            Tok::Ident(name) if FUNCS.contains(&name.as_str()) => Arg::Func(name.clone()),
            Tok::Ident(name) => return Err(TemplateError::UnknownFunction(name.clone())),
            Tok::Close => return syntax("unexpected right paren"),
            _ => return syntax("unexpected \",\" or \":=\" in command"),
        };
        pipe.last_mut().expect("pipe starts non-empty").push(arg);
        i += 1;
    }
    for (n, cmd) in pipe.iter().enumerate() {
        match cmd.first() {
            None => return syntax("missing value for command"),
            Some(Arg::Func(_)) => {}
            Some(_) if cmd.len() > 1 || n > 0 => {
                return syntax("can't give argument to non-function");
            }
            Some(_) => {}
        }
    }
    Ok(pipe)
}

impl Template {
    /// Parses `src`; unknown functions and unbalanced blocks are errors here.
    pub fn parse(src: &str) -> Result<Template> {
        let mut parser = Parser {
            items: lex(src)?.into_iter(),
        };
        match parser.list()? {
            (nodes, None) => Ok(Template { nodes }),
            (_, Some(Stop::End)) => syntax("unexpected {{end}}"),
            (_, Some(Stop::Else(_))) => syntax("unexpected {{else}}"),
        }
    }

    /// Renders against `v`, which is both `.` and `$`.
    pub fn render(&self, v: &Value) -> Result<String> {
        let mut ex = Exec {
            vars: vec![(String::new(), v.clone())],
        };
        let mut out = String::new();
        ex.walk(&self.nodes, v, &mut out)?;
        Ok(out)
    }

    /// The header row of a table: text is kept, each action becomes the header of the
    /// first field it names, looked up in `names` by dotted path, else Docker's rule
    /// (`CreatedAt` → `CREATED AT`).
    pub fn header(&self, names: &[(&str, &str)]) -> String {
        fn first_field(pipe: &Pipe) -> Option<&Vec<String>> {
            pipe.iter().flatten().find_map(|a| match a {
                Arg::Field(f) | Arg::Var(_, f) if !f.is_empty() => Some(f),
                Arg::Sub(p) => first_field(p),
                _ => None,
            })
        }
        let mut out = String::new();
        for node in &self.nodes {
            let pipe = match node {
                Node::Text(t) => {
                    out.push_str(t);
                    continue;
                }
                Node::Action(_, p) | Node::Range(_, p, ..) | Node::With(_, p, ..) => p,
                Node::If(branches, _) => &branches[0].1,
            };
            let Some(field) = first_field(pipe) else {
                continue;
            };
            let path = field.join(".");
            match names.iter().find(|(k, _)| *k == path) {
                Some((_, h)) => out.push_str(h),
                None => out.push_str(&header_name(field.last().expect("non-empty"))),
            }
        }
        out
    }
}

/// `CreatedAt` → `CREATED AT`, `HTTPPort` → `HTTP PORT`, `ID` → `ID`.
fn header_name(field: &str) -> String {
    let c: Vec<char> = field.chars().collect();
    let mut out = String::new();
    for (i, &ch) in c.iter().enumerate() {
        let word_start = i > 0
            && ch.is_uppercase()
            && (!c[i - 1].is_uppercase()
                || c.get(i + 1).is_some_and(|n| n.is_lowercase()) && c[i - 1].is_uppercase());
        if word_start {
            out.push(' ');
        }
        out.extend(ch.to_uppercase());
    }
    out
}

struct Exec {
    vars: Vec<(String, Value)>,
}

impl Exec {
    fn walk(&mut self, nodes: &[Node], dot: &Value, out: &mut String) -> Result<()> {
        let scope = self.vars.len();
        for node in nodes {
            match node {
                Node::Text(t) => out.push_str(t),
                Node::Action(vars, pipe) => {
                    let v = self.pipe(pipe, dot)?;
                    if vars.is_empty() {
                        print(&v, true, out);
                    } else {
                        self.declare(vars, None, v);
                    }
                }
                Node::If(branches, alt) => {
                    let mut taken = false;
                    for (vars, pipe, body) in branches {
                        let v = self.pipe(pipe, dot)?;
                        if truth(&v) {
                            let inner = self.vars.len();
                            self.declare(vars, None, v);
                            self.walk(body, dot, out)?;
                            self.vars.truncate(inner);
                            taken = true;
                            break;
                        }
                    }
                    if !taken {
                        self.walk(alt, dot, out)?;
                    }
                }
                Node::With(vars, pipe, body, alt) => {
                    let v = self.pipe(pipe, dot)?;
                    if truth(&v) {
                        let inner = self.vars.len();
                        self.declare(vars, None, v.clone());
                        self.walk(body, &v, out)?;
                        self.vars.truncate(inner);
                    } else {
                        self.walk(alt, dot, out)?;
                    }
                }
                Node::Range(vars, pipe, body, alt) => {
                    let v = self.pipe(pipe, dot)?;
                    let elems: Vec<(Value, Value)> = match v {
                        Value::Array(a) => (0..).map(Value::from).zip(a).collect(),
                        Value::Object(m) => sorted(m).map(|(k, v)| (Value::String(k), v)).collect(),
                        Value::Null => Vec::new(),
                        other => return exec(format!("range can't iterate over {}", text(&other))),
                    };
                    if elems.is_empty() {
                        self.walk(alt, dot, out)?;
                    }
                    for (key, elem) in elems {
                        let inner = self.vars.len();
                        self.declare(vars, Some(key), elem.clone());
                        self.walk(body, &elem, out)?;
                        self.vars.truncate(inner);
                    }
                }
            }
        }
        self.vars.truncate(scope);
        Ok(())
    }

    /// One variable takes the element; two take key and element.
    fn declare(&mut self, vars: &[String], key: Option<Value>, elem: Value) {
        match vars {
            [v] => self.vars.push((v.clone(), elem)),
            [k, v] => {
                self.vars.push((k.clone(), key.unwrap_or(Value::Null)));
                self.vars.push((v.clone(), elem));
            }
            _ => {}
        }
    }

    fn pipe(&mut self, pipe: &Pipe, dot: &Value) -> Result<Value> {
        let mut prev = None;
        for cmd in pipe {
            prev = Some(match &cmd[0] {
                Arg::Func(name) => self.call(name, &cmd[1..], prev, dot)?,
                arg => self.arg(arg, dot)?,
            });
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    fn arg(&mut self, arg: &Arg, dot: &Value) -> Result<Value> {
        match arg {
            Arg::Dot => Ok(dot.clone()),
            Arg::Field(chain) => field(dot, chain),
            Arg::Var(name, chain) => match self.vars.iter().rev().find(|(n, _)| n == name) {
                Some((_, v)) => field(v, chain),
                None => Err(TemplateError::UndefinedVariable(name.clone())),
            },
            Arg::Lit(v) => Ok(v.clone()),
            Arg::Func(name) => self.call(name, &[], None, dot),
            Arg::Sub(p) => self.pipe(p, dot),
        }
    }

    fn call(
        &mut self,
        name: &str,
        args: &[Arg],
        piped: Option<Value>,
        dot: &Value,
    ) -> Result<Value> {
        if matches!(name, "and" | "or") {
            // Short-circuits like Go: arguments after the deciding one are not evaluated.
            let mut last = Value::Null;
            for arg in args {
                last = self.arg(arg, dot)?;
                if truth(&last) == (name == "or") {
                    return Ok(last);
                }
            }
            return Ok(piped.unwrap_or(last));
        }
        let mut a = args
            .iter()
            .map(|arg| self.arg(arg, dot))
            .collect::<Result<Vec<_>>>()?;
        a.extend(piped);
        let (min, max) = match name {
            "json" | "upper" | "lower" | "title" | "len" | "not" => (1, 1),
            "join" | "split" | "truncate" | "lt" | "le" | "gt" | "ge" | "ne" => (2, 2),
            "pad" => (3, 3),
            "index" | "printf" => (1, usize::MAX),
            "eq" => (2, usize::MAX),
            _ => (0, usize::MAX),
        };
        if a.len() < min || a.len() > max {
            return exec(format!("wrong number of args for {name}: got {}", a.len()));
        }
        let s = |i: usize| string_arg(&a[i]);
        Ok(match name {
            "json" => Value::String(a[0].to_string()),
            "upper" => Value::String(s(0)?.to_uppercase()),
            "lower" => Value::String(s(0)?.to_lowercase()),
            "title" => Value::String(title(&s(0)?)),
            "len" => Value::from(match &a[0] {
                Value::String(t) => t.len(),
                Value::Array(v) => v.len(),
                Value::Object(m) => m.len(),
                other => return exec(format!("len of type {}", kind(other))),
            }),
            "not" => Value::Bool(!truth(&a[0])),
            "join" => match &a[0] {
                Value::Array(items) => {
                    let parts: Vec<String> = items.iter().map(text).collect();
                    Value::String(parts.join(&s(1)?))
                }
                Value::Null => Value::String(String::new()),
                other => return exec(format!("join of type {}", kind(other))),
            },
            "split" => {
                let (whole, sep) = (s(0)?, s(1)?);
                let parts: Vec<Value> = if sep.is_empty() {
                    whole
                        .chars()
                        .map(|c| Value::String(c.to_string()))
                        .collect()
                } else {
                    whole.split(&sep).map(Value::from).collect()
                };
                Value::Array(parts)
            }
            "truncate" => Value::String(s(0)?.chars().take(int_arg(&a[1])?).collect()),
            "pad" => {
                let t = s(0)?;
                if t.is_empty() {
                    Value::String(t)
                } else {
                    let (l, r) = (int_arg(&a[1])?, int_arg(&a[2])?);
                    Value::String(format!("{}{t}{}", " ".repeat(l), " ".repeat(r)))
                }
            }
            "index" => {
                let mut cur = a[0].clone();
                for key in &a[1..] {
                    cur = match (&cur, key) {
                        (Value::Object(m), Value::String(k)) => {
                            m.get(k).cloned().unwrap_or(Value::Null)
                        }
                        (Value::Array(v), Value::Number(_)) => {
                            let i = int_arg(key)?;
                            match v.get(i) {
                                Some(e) => e.clone(),
                                None => return exec(format!("index out of range: {i}")),
                            }
                        }
                        (Value::Null, _) => Value::Null,
                        (c, k) => {
                            return exec(format!("can't index {} with {}", kind(c), kind(k)));
                        }
                    };
                }
                cur
            }
            "printf" => Value::String(sprintf(&s(0)?, &a[1..])),
            "println" => {
                let parts: Vec<String> = a.iter().map(text).collect();
                Value::String(parts.join(" ") + "\n")
            }
            "eq" => {
                let mut any = false;
                for b in &a[1..] {
                    any |= compare(&a[0], b)? == Some(std::cmp::Ordering::Equal);
                }
                Value::Bool(any)
            }
            "ne" => Value::Bool(compare(&a[0], &a[1])? != Some(std::cmp::Ordering::Equal)),
            _ => {
                let Some(ord) = compare(&a[0], &a[1])?.filter(|_| !a[0].is_null()) else {
                    return exec(format!("invalid type for comparison in {name}"));
                };
                Value::Bool(match name {
                    "lt" => ord.is_lt(),
                    "le" => ord.is_le(),
                    "gt" => ord.is_gt(),
                    _ => ord.is_ge(),
                })
            }
        })
    }
}

fn sorted(m: Map<String, Value>) -> impl Iterator<Item = (String, Value)> {
    let mut v: Vec<_> = m.into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v.into_iter()
}

fn field(v: &Value, chain: &[String]) -> Result<Value> {
    let mut cur = v;
    for name in chain {
        cur = match cur {
            Value::Object(m) => m
                .get(name)
                .ok_or_else(|| TemplateError::NoField(name.clone()))?,
            // A missing map key prints `<no value>` in Go, and so do fields below it.
            Value::Null => return Ok(Value::Null),
            other => {
                return Err(TemplateError::FieldOfNonObject {
                    field: name.clone(),
                    kind: kind(other),
                });
            }
        };
    }
    Ok(cur.clone())
}

/// Go's truth: false, 0, "", nil and empty collections are false.
fn truth(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nil",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "slice",
        Value::Object(_) => "map",
    }
}

/// Equality for any pair (None when the kinds differ); order only for numbers and strings.
fn compare(a: &Value, b: &Value) -> Result<Option<std::cmp::Ordering>> {
    use std::cmp::Ordering::Equal;
    Ok(match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            _ => x.as_f64().partial_cmp(&y.as_f64()),
        },
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) if x == y => Some(Equal),
        (Value::Null, Value::Null) => Some(Equal),
        (Value::Array(_) | Value::Object(_), _) | (_, Value::Array(_) | Value::Object(_)) => {
            return exec(format!("non-comparable types {} and {}", kind(a), kind(b)));
        }
        (Value::Null, _) | (_, Value::Null) | (Value::Bool(_), Value::Bool(_)) => None,
        _ => {
            return exec(format!(
                "incompatible types for comparison: {} and {}",
                kind(a),
                kind(b)
            ))
        }
    })
}

fn string_arg(v: &Value) -> Result<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(_) | Value::Bool(_) => Ok(text(v)),
        other => exec(format!(
            "wrong type for value; expected string; got {}",
            kind(other)
        )),
    }
}

fn int_arg(v: &Value) -> Result<usize> {
    match v.as_u64().and_then(|n| usize::try_from(n).ok()) {
        Some(n) => Ok(n),
        None => exec(format!("expected a non-negative integer, got {}", text(v))),
    }
}

fn title(s: &str) -> String {
    let mut out = String::new();
    let mut boundary = true;
    for c in s.chars() {
        if boundary {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        boundary = !is_ident(c);
    }
    out
}

fn text(v: &Value) -> String {
    let mut s = String::new();
    print(v, false, &mut s);
    s
}

/// Prints like Go's `%v`: `[a b]`, `map[k:v]`; null is `<no value>` at the top of an
/// action (a missing key) and `<nil>` inside a collection.
fn print(v: &Value, top: bool, out: &mut String) {
    match v {
        Value::Null if top => out.push_str("<no value>"),
        Value::Null => out.push_str("<nil>"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&number(n)),
        Value::String(s) => out.push_str(s),
        Value::Array(a) => {
            out.push('[');
            for (i, e) in a.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                print(e, false, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push_str("map[");
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(k);
                out.push(':');
                print(&m[k], false, out);
            }
            out.push(']');
        }
    }
}

/// Integers bare, integral floats without a fraction, other floats in shortest form.
fn number(n: &Number) -> String {
    match n.as_f64() {
        Some(f) if !(n.is_i64() || n.is_u64()) && f.fract() == 0.0 && f.abs() < 1e21 => {
            format!("{f:.0}")
        }
        _ => n.to_string(),
    }
}

fn digits(chars: &mut std::iter::Peekable<std::str::Chars>) -> Option<usize> {
    let mut n = None;
    while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
        n = Some(n.unwrap_or(0) * 10 + d as usize);
        chars.next();
    }
    n
}

/// Go's `Sprintf` for the verbs people use in formats: `%s %v %d %q %f %%`, with the
/// `-` flag, width and precision.
fn sprintf(fmt: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut args = args.iter();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut left = false;
        while let Some(&f) = chars
            .peek()
            .filter(|f| matches!(**f, '-' | '+' | ' ' | '#'))
        {
            left |= f == '-';
            chars.next();
        }
        let width = digits(&mut chars).unwrap_or(0);
        let prec = if chars.peek() == Some(&'.') {
            chars.next();
            Some(digits(&mut chars).unwrap_or(0))
        } else {
            None
        };
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.next() else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        let bad = || format!("%!{verb}({}={})", kind(arg), text(arg));
        let cell = match (verb, arg) {
            ('v', _) => text(arg),
            ('s', Value::String(s)) => match prec {
                Some(p) => s.chars().take(p).collect(),
                None => s.clone(),
            },
            ('s', Value::Array(_) | Value::Object(_) | Value::Null) => text(arg),
            ('d', Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
            ('f', Value::Number(n)) => {
                format!("{:.*}", prec.unwrap_or(6), n.as_f64().unwrap_or(0.0))
            }
            // JSON's quoting agrees with Go's `%q` for everything but rare control characters.
            ('q', Value::String(_)) => arg.to_string(),
            _ => bad(),
        };
        let pad = width.saturating_sub(cell.chars().count());
        if left {
            out.push_str(&(cell + &" ".repeat(pad)));
        } else {
            out.push_str(&(" ".repeat(pad) + &cell));
        }
    }
    let extra: Vec<String> = args.map(|a| format!("{}={}", kind(a), text(a))).collect();
    if !extra.is_empty() {
        let _ = write!(out, "%!(EXTRA {})", extra.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(src: &str, v: &Value) -> String {
        Template::parse(src).unwrap().render(v).unwrap()
    }

    fn error(src: &str, v: &Value) -> String {
        match Template::parse(src).and_then(|t| t.render(v)) {
            Ok(s) => panic!("{src:?} rendered {s:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn inspect() -> Value {
        json!({
            "ID": "4f3c2a1b",
            "Name": "/web",
            "State": {"Status": "running", "Running": true, "Pid": 42, "Health": null},
            "Config": {"Image": "nginx", "Labels": {"com.example.x": "1", "app": "web"}},
            "Mounts": [{"Source": "/a"}, {"Source": "/b"}],
            "Ports": ["80/tcp", "443/tcp"],
            "Size": 1.5,
        })
    }

    #[test]
    fn field_chain_prints_nested_string() {
        assert_eq!(render("{{.State.Status}}", &inspect()), "running");
        assert_eq!(
            render("{{ .State.Pid }} {{.State.Running}}", &inspect()),
            "42 true"
        );
    }

    #[test]
    fn json_function_prints_compact_json() {
        assert_eq!(
            render("{{json .Config}}", &inspect()),
            r#"{"Image":"nginx","Labels":{"app":"web","com.example.x":"1"}}"#
        );
        assert_eq!(render("{{.Config | json}}", &json!({"Config": [1]})), "[1]");
    }

    #[test]
    fn literal_backslash_t_and_n_become_tab_and_newline() {
        assert_eq!(
            render(r"{{.Name}}\t{{.ID}}\n", &inspect()),
            "/web\t4f3c2a1b\n"
        );
    }

    #[test]
    fn range_over_labels_sorts_keys_and_binds_variables() {
        let v = inspect();
        assert_eq!(
            render(
                "{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}}",
                &v
            ),
            "app=web;com.example.x=1;"
        );
        assert_eq!(render("{{range .Mounts}}{{.Source}} {{end}}", &v), "/a /b ");
        assert_eq!(
            render("{{range $i, $p := .Ports}}{{$i}}:{{$p}} {{end}}", &v),
            "0:80/tcp 1:443/tcp "
        );
        assert_eq!(
            render("{{range .Nope}}x{{else}}none{{end}}", &json!({"Nope": []})),
            "none"
        );
        assert_eq!(render("{{range .Ports}}{{$.Name}}{{end}}", &v), "/web/web");
    }

    #[test]
    fn if_else_if_else_picks_first_true_branch() {
        let t =
            Template::parse(r#"{{if eq .S "up"}}U{{else if .Fallback}}F{{else}}D{{end}}"#).unwrap();
        assert_eq!(t.render(&json!({"S": "up", "Fallback": 0})).unwrap(), "U");
        assert_eq!(t.render(&json!({"S": "no", "Fallback": 1})).unwrap(), "F");
        assert_eq!(t.render(&json!({"S": "no", "Fallback": ""})).unwrap(), "D");
        assert_eq!(
            render(
                "{{if and .State.Running (gt .State.Pid 1)}}y{{end}}",
                &inspect()
            ),
            "y"
        );
        assert_eq!(
            render("{{if not .State.Health}}none{{end}}", &inspect()),
            "none"
        );
        assert_eq!(
            render(
                "{{if or .A .B}}{{or .A .B}}{{end}}",
                &json!({"A": "", "B": "b"})
            ),
            "b"
        );
    }

    #[test]
    fn with_rebinds_dot_and_skips_empty() {
        assert_eq!(
            render("{{with .Config}}{{.Image}}{{end}}", &inspect()),
            "nginx"
        );
        assert_eq!(
            render(
                "{{with .State.Health}}x{{else}}no health{{end}}",
                &inspect()
            ),
            "no health"
        );
    }

    #[test]
    fn index_reaches_dotted_keys_and_array_items() {
        let v = inspect();
        assert_eq!(
            render(r#"{{index .Config.Labels "com.example.x"}}"#, &v),
            "1"
        );
        assert_eq!(render(r#"{{index .Ports 1}}"#, &v), "443/tcp");
        assert_eq!(
            render(r#"{{index .Config.Labels "missing"}}"#, &v),
            "<no value>"
        );
        assert_eq!(
            error("{{index .Ports 5}}", &v),
            "template: index out of range: 5"
        );
    }

    #[test]
    fn printf_formats_common_verbs() {
        let v = inspect();
        assert_eq!(
            render(
                r#"{{printf "%s %d %v %q" .Name .State.Pid .Ports .ID}}"#,
                &v
            ),
            r#"/web 42 [80/tcp 443/tcp] "4f3c2a1b""#
        );
        assert_eq!(
            render(r#"{{printf "%-6s|%5d|%.2f" "ab" 42 .Size}}"#, &v),
            "ab    |   42|1.50"
        );
        assert_eq!(
            render(r#"{{printf "%d %s" "x"}}"#, &v),
            "%!d(string=x) %!s(MISSING)"
        );
        assert_eq!(render(r#"{{.ID | printf "id=%s"}}"#, &v), "id=4f3c2a1b");
    }

    #[test]
    fn string_functions_match_docker() {
        let v = inspect();
        assert_eq!(
            render(
                r#"{{upper .Config.Image}} {{title "hello wide world"}}"#,
                &v
            ),
            "NGINX Hello Wide World"
        );
        assert_eq!(render(r#"{{join .Ports ", "}}"#, &v), "80/tcp, 443/tcp");
        assert_eq!(
            render(r#"{{index (split "a:b:c" ":") 2}} {{len .Ports}}"#, &v),
            "c 2"
        );
        assert_eq!(
            render(r#"{{truncate .ID 4}}|{{pad "x" 1 2}}|{{pad "" 1 2}}"#, &v),
            "4f3c| x  |"
        );
        assert_eq!(render(r#"{{println "a" 1}}"#, &v), "a 1\n");
    }

    #[test]
    fn values_print_as_go_does() {
        let v = json!({"M": {"b": 2, "a": [true, null]}, "F": 2.0, "G": 0.25, "N": null});
        assert_eq!(
            render("{{.M}} {{.F}} {{.G}} {{.N}}", &v),
            "map[a:[true <nil>] b:2] 2 0.25 <no value>"
        );
        assert_eq!(render("{{.N.Deeper}}", &v), "<no value>");
    }

    #[test]
    fn trim_markers_eat_adjacent_whitespace() {
        let v = inspect();
        assert_eq!(render("a  {{- .ID -}}  \n b", &v), "a4f3c2a1bb");
        assert_eq!(
            render("{{range .Ports -}}\n  {{.}}\n{{- end}}", &v),
            "80/tcp443/tcp"
        );
        assert_eq!(render("x\\n  {{- .ID}}", &v), "x4f3c2a1b");
        assert_eq!(render("{{-3}}", &v), "-3");
    }

    #[test]
    fn parse_errors_are_one_line() {
        let v = inspect();
        assert_eq!(error("{{.ID", &v), "template: unclosed action");
        assert_eq!(
            error("{{foo .ID}}", &v),
            r#"template: unknown function "foo""#
        );
        assert_eq!(
            error("{{if .ID}}x", &v),
            "template: unexpected EOF: if without end"
        );
        assert_eq!(error("x{{end}}", &v), "template: unexpected {{end}}");
        assert_eq!(
            error(r#"{{"abc}}"#, &v),
            "template: unterminated quoted string"
        );
        assert_eq!(
            error("{{.ID .Name}}", &v),
            "template: can't give argument to non-function"
        );
    }

    #[test]
    fn execution_errors_name_the_problem() {
        let v = inspect();
        assert_eq!(error("{{.Foo}}", &v), "template: can't evaluate field Foo");
        assert_eq!(
            error("{{.ID.Short}}", &v),
            "template: can't evaluate field Short in type string"
        );
        assert_eq!(error("{{$x}}", &v), "template: undefined variable $x");
        assert_eq!(
            error(r#"{{lt .ID 3}}"#, &v),
            "template: incompatible types for comparison: string and number"
        );
    }

    #[test]
    fn table_format_has_header_row_and_aligned_columns() {
        let Format::Table(row) =
            parse_format(r"table {{.ID}}\t{{.Image}}\t{{.CreatedAt}}").unwrap()
        else {
            panic!("not a table");
        };
        assert_eq!(
            row.header(&[("ID", "CONTAINER ID")]),
            "CONTAINER ID\tIMAGE\tCREATED AT"
        );
        let items = [
            json!({"ID": "abc", "Image": "nginx:latest", "CreatedAt": "now"}),
            json!({"ID": "def0123456789", "Image": "sh", "CreatedAt": "then"}),
        ];
        let out = Format::Table(row)
            .render(&items, &[("ID", "CONTAINER ID")])
            .unwrap();
        assert_eq!(
            out,
            "CONTAINER ID    IMAGE          CREATED AT\n\
             abc             nginx:latest   now\n\
             def0123456789   sh             then\n"
        );
    }

    #[test]
    fn table_pads_short_columns_to_docker_minimum() {
        let rows = vec![
            vec!["A".into(), "B".into()],
            vec!["longer-cell".into(), "x".into()],
        ];
        assert_eq!(table(&rows), "A             B\nlonger-cell   x\n");
        let rows = vec![vec!["ID".into(), "N".into()]];
        assert_eq!(table(&rows), "ID        N\n");
    }

    #[test]
    fn header_names_follow_docker_spacing() {
        assert_eq!(header_name("CreatedAt"), "CREATED AT");
        assert_eq!(header_name("ID"), "ID");
        assert_eq!(header_name("HTTPPort"), "HTTP PORT");
        assert_eq!(header_name("RunningFor"), "RUNNING FOR");
    }

    #[test]
    fn json_format_prints_one_document_per_item() {
        let format = parse_format("json").unwrap();
        assert!(matches!(format, Format::Json));
        let out = format
            .render(&[json!({"a": 1}), json!({"b": [2]})], &[])
            .unwrap();
        assert_eq!(out, "{\"a\":1}\n{\"b\":[2]}\n");
    }

    #[test]
    fn plain_format_prints_one_line_per_item_and_bare_table_takes_default() {
        let out = parse_format(r"{{.ID}}:{{.N}}")
            .unwrap()
            .render(
                &[json!({"ID": 1, "N": "a"}), json!({"ID": 2, "N": "b"})],
                &[],
            )
            .unwrap();
        assert_eq!(out, "1:a\n2:b\n");
        let Format::Table(row) = parse_format_or("table", r"{{.ID}}\t{{.Names}}").unwrap() else {
            panic!("not a table");
        };
        assert_eq!(row.header(&[]), "ID\tNAMES");
    }
}
