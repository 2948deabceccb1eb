//! The kernel configuration as the preprocessor sees it, and the evaluation of the
//! `condition` attributes and `#if`s of the interface files against it.

use std::collections::BTreeMap;
use std::path::Path;

use crate::{read, BUILD_DEFINES};

/// The preprocessor view of the kernel configuration: autoconf.h plus the build defines.
pub struct Config {
    pub defines: BTreeMap<String, String>,
}

impl Config {
    pub fn load(autoconf: &Path) -> Config {
        println!("cargo:rerun-if-changed={}", autoconf.display());
        let mut defines = BTreeMap::new();
        for line in read(autoconf).lines() {
            let mut words = line.split_whitespace();
            if words.next() == Some("#define") {
                if let Some(name) = words.next() {
                    defines.insert(name.to_string(), words.collect::<Vec<_>>().join(" "));
                }
            }
        }
        for d in BUILD_DEFINES {
            defines.insert(d.to_string(), "1".into());
        }
        Config { defines }
    }

    pub fn number(&self, name: &str) -> i64 {
        let v = self
            .defines
            .get(name)
            .unwrap_or_else(|| panic!("the kernel configuration does not define {name}"));
        v.parse()
            .unwrap_or_else(|_| panic!("{name} = {v} is not a number"))
    }

    /// Evaluates the conditions the interface files use: `defined(X)`, `defined X`,
    /// `X > N`, `X == N`, `!c`, `a && b`, `a || b`, and an empty condition (true).
    pub fn eval(&self, cond: &str) -> bool {
        let tokens = tokenize(cond);
        if tokens.is_empty() {
            return true;
        }
        let mut p = CondParser {
            tokens: &tokens,
            pos: 0,
            config: self,
        };
        let v = p.or();
        assert!(
            p.pos == tokens.len(),
            "cannot evaluate the condition {cond:?}"
        );
        v
    }
}

fn tokenize(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c.is_alphanumeric() || c == '_' {
            let mut w = String::new();
            while let Some(&c) = chars.peek().filter(|c| c.is_alphanumeric() || **c == '_') {
                w.push(c);
                chars.next();
            }
            out.push(w);
        } else {
            chars.next();
            let two = chars.peek().map(|n| format!("{c}{n}"));
            match two.as_deref() {
                Some("&&" | "||" | "==" | "!=" | ">=" | "<=") => {
                    out.push(two.unwrap_or_default());
                    chars.next();
                }
                _ => out.push(c.to_string()),
            }
        }
    }
    out
}

struct CondParser<'a> {
    tokens: &'a [String],
    pos: usize,
    config: &'a Config,
}

impl<'a> CondParser<'a> {
    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.pos).map(String::as_str)
    }
    fn next(&mut self) -> &'a str {
        let tokens = self.tokens;
        let t = tokens
            .get(self.pos)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("condition ends early: {tokens:?}"));
        self.pos += 1;
        t
    }
    fn expect(&mut self, token: &str) {
        let tokens = self.tokens;
        assert_eq!(self.next(), token, "unbalanced condition {tokens:?}");
    }
    fn or(&mut self) -> bool {
        let mut v = self.and();
        while self.peek() == Some("||") {
            self.pos += 1;
            v |= self.and();
        }
        v
    }
    fn and(&mut self) -> bool {
        let mut v = self.unary();
        while self.peek() == Some("&&") {
            self.pos += 1;
            v &= self.unary();
        }
        v
    }
    fn unary(&mut self) -> bool {
        match self.peek() {
            Some("!") => {
                self.pos += 1;
                !self.unary()
            }
            Some("(") => {
                self.pos += 1;
                let v = self.or();
                self.expect(")");
                v
            }
            Some("defined") => {
                self.pos += 1;
                let paren = self.peek() == Some("(");
                if paren {
                    self.pos += 1;
                }
                let name = self.next().to_string();
                if paren {
                    self.expect(")");
                }
                self.config.defines.contains_key(&name)
            }
            _ => {
                let lhs = self.value();
                let op = match self.peek() {
                    Some(op @ (">" | "<" | ">=" | "<=" | "==" | "!=")) => op.to_string(),
                    _ => return lhs != 0,
                };
                self.pos += 1;
                let rhs = self.value();
                match op.as_str() {
                    ">" => lhs > rhs,
                    "<" => lhs < rhs,
                    ">=" => lhs >= rhs,
                    "<=" => lhs <= rhs,
                    "==" => lhs == rhs,
                    _ => lhs != rhs,
                }
            }
        }
    }
    /// A number, or a macro's numeric value (0 when undefined, as in the preprocessor).
    fn value(&mut self) -> i64 {
        let t = self.next().to_string();
        if let Ok(n) = t.parse() {
            return n;
        }
        match self.config.defines.get(&t) {
            None => 0,
            Some(v) => v
                .parse()
                .unwrap_or_else(|_| panic!("{t} = {v} is not a number in a condition")),
        }
    }
}
