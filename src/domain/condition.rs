//! Skip conditions: CEL expressions over an execution's variables, checked
//! when a pipeline is written and evaluated when a stage is about to start.
//!
//! The CEL parser recurses once per nesting level and per chained operator
//! and cannot be stopped once it runs out of stack (the process aborts), so
//! [`scan`] measures the text first, without recursion, and refuses what is
//! longer, deeper or more chained than [`Limits`] allow. The limits are
//! chosen so that the deepest accepted expression parses and evaluates on a
//! 256 KiB stack (a tokio worker has 2 MiB); a test proves it.

use std::{cell::Cell, collections::BTreeMap};

use cel_interpreter::{Context, Program, Value};

use super::limits::Limits;

/// Compiles `source` and checks it names only `declared` variables, none of
/// the `secret` ones: whether a stage ran would tell something of a secret.
/// Returns a description of the problem, for a [`super::Violation`].
pub fn check(source: &str, declared: &[&str], secret: &[&str], limits: &Limits) -> Result<(), String> {
    if source.trim().is_empty() {
        return Err("expression is empty; set `always` or write a CEL expression".into());
    }
    let program = compile(source, limits)?;
    let references = program.references();
    let mut secrets: Vec<&str> = references.variables().into_iter().filter(|v| secret.contains(v)).collect();
    secrets.sort_unstable();
    secrets.dedup();
    if !secrets.is_empty() {
        let names: Vec<String> = secrets.iter().take(10).map(|v| super::limits::quote(v)).collect();
        return Err(format!(
            "expression names secret variable(s) {}; secrets cannot decide whether a stage runs",
            names.join(", ")
        ));
    }
    let mut unknown: Vec<&str> = references.variables().into_iter().filter(|v| !declared.contains(v)).collect();
    unknown.sort_unstable();
    unknown.dedup();
    if !unknown.is_empty() {
        let names: Vec<String> = unknown.iter().take(10).map(|v| super::limits::quote(v)).collect();
        return Err(format!(
            "expression names undeclared variable(s) {}; declare them in definition.variables",
            names.join(", ")
        ));
    }
    // Evaluating with every variable bound to "" catches type errors such as
    // `region + 1` early; a non-bool result is refused too.
    let sample: BTreeMap<String, String> = declared.iter().map(|v| (v.to_string(), String::new())).collect();
    evaluate_program(&program, &sample).map(|_| ())
}

/// Evaluates a skip condition; `true` means skip the stage. The expression
/// was checked when it was written; it is scanned again (with the default
/// limits, which are the ones proven safe) before the parser sees it.
pub fn evaluate(source: &str, variables: &BTreeMap<String, String>) -> Result<bool, String> {
    evaluate_program(&compile(source, &Limits::default())?, variables)
}

thread_local! {
    static PARSING: Cell<bool> = const { Cell::new(false) };
}

/// True while this thread runs the CEL parser or interpreter under
/// `catch_unwind`: a panic hook can say that the panic is caught and
/// becomes a refusal.
pub fn parsing_on_this_thread() -> bool {
    PARSING.with(Cell::get)
}

/// Runs `f` (the CEL parser or interpreter) with its panics caught and
/// marked as such for the panic hook.
fn caught<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    PARSING.with(|p| p.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    PARSING.with(|p| p.set(false));
    result
}

fn compile(source: &str, limits: &Limits) -> Result<Program, String> {
    scan(source, limits)?;
    // cel-parser 0.10 panics on some malformed input ("region =="); a panic
    // must not take a request down with it, so it counts as a parse error.
    // The panic hook logs it in one line; nothing else is logged here.
    match caught(|| Program::compile(source)) {
        Ok(Ok(program)) => Ok(program),
        Ok(Err(e)) => Err(match e.errors.first() {
            Some(first) => parse_error(source, first.pos, &first.msg),
            None => format!("expression does not parse: {}", first_line(&e.to_string())),
        }),
        // The parser panics where an operand is missing at the end ("region ==").
        Err(_) => Err(format!(
            "expression does not parse at column {}: it ends where an operand or a closing bracket is expected",
            source.trim_end().chars().count() + 1
        )),
    }
}

/// `expression does not parse at column 18: <reason>, near "&& x"`: where
/// (the line too, for an expression of several), why, and what is there.
fn parse_error(source: &str, (line, column): (isize, isize), message: &str) -> String {
    let line = line.max(1) as usize;
    let column = column.max(1) as usize;
    let at =
        if source.lines().count() > 1 { format!("line {line}, column {column}") } else { format!("column {column}") };
    let near: String = source.lines().nth(line - 1).unwrap_or_default().chars().skip(column - 1).take(20).collect();
    let reason = first_line(message.trim_start_matches("Syntax error: "));
    if near.trim().is_empty() {
        format!("expression does not parse at {at}: {reason}")
    } else {
        format!("expression does not parse at {at}: {reason}, near {near:?}")
    }
}

/// The parser's error report can quote the whole expression over several
/// lines; one line of it, cut, is enough to act on.
fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    super::limits::truncate_marked(line, 200)
}

fn evaluate_program(program: &Program, variables: &BTreeMap<String, String>) -> Result<bool, String> {
    let mut context = Context::default();
    for (name, value) in variables {
        context.add_variable_from_value(name.clone(), value.clone());
    }
    // cel-interpreter 0.10 panics on what it does not support yet, such as
    // a macro over a string (`"s".all(x, x)`): a refusal, not a crash.
    match caught(|| program.execute(&context)) {
        Ok(Ok(Value::Bool(b))) => Ok(b),
        Ok(Ok(other)) => Err(format!("expression must evaluate to a bool, got {}", other.type_of())),
        Ok(Err(e)) => Err(format!("expression failed to evaluate: {}", first_line(&e.to_string()))),
        Err(_) => Err("expression failed to evaluate: it uses something the CEL interpreter does not support \
             (such as all, exists or map over a string); use a list"
            .into()),
    }
}

/// Macros that loop over a list: one inside another multiplies the work.
const COMPREHENSIONS: [&str; 5] = ["all", "exists", "exists_one", "map", "filter"];

/// One nesting level of the scan: an open (, [ or {.
#[derive(Clone, Copy, Default)]
struct Level {
    /// Operators and member accesses chained so far in the current
    /// sub-expression of this level (reset by `,`, `&&` and `||`).
    chain: usize,
    /// Conditionals (`?`) open in this level: each nests the next, and
    /// `&&` or `||` (which bind tighter) do not close them; only `,` does.
    conditionals: usize,
    /// The ( of a comprehension macro such as `.all(`.
    comprehension: bool,
}

/// Refuses, without recursion, an expression longer than
/// `max_expression_bytes`, nesting (), [] and {} deeper than
/// `max_expression_depth`, chaining more than `max_expression_chain`
/// operators and member accesses along one path, or with a comprehension
/// macro inside another. It over-approximates what the parser builds: text
/// it accepts may still fail to parse, but never too deep for the stack.
pub fn scan(source: &str, limits: &Limits) -> Result<(), String> {
    if source.len() > limits.max_expression_bytes {
        return Err(format!(
            "expression is {} bytes; at most {} are allowed",
            source.len(),
            limits.max_expression_bytes
        ));
    }
    let b = source.as_bytes();
    let mut levels = vec![Level::default()];
    let mut path = 0usize; // sum of `chain` over `levels`
    let mut operand = false; // the previous token ends an operand
    let mut member = false; // the previous token is a `.`
    let mut last_ident: Option<(&str, bool)> = None; // an identifier just seen, and whether a `.` preceded it
    let mut i = 0;
    let too_long = || {
        format!(
            "expression chains more than {} operators or member accesses along one path (as in a.b.c or x + y + z, counted over the brackets around them); split it up",
            limits.max_expression_chain
        )
    };
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        let mut ident = None;
        let mut link = false;
        let mut was_member = false;
        match c {
            b' ' | b'\t' | b'\r' | b'\n' | b'\x0c' => {
                i += 1;
                continue;
            }
            b'/' if next == Some(b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' | b'\'' => {
                i = skip_string(b, i, false);
                operand = true;
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
                i += 1;
                operand = true;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                let word = &source[start..i];
                let prefix = word.len() <= 2 && word.bytes().all(|x| b"rRbB".contains(&x));
                if prefix && matches!(b.get(i), Some(b'"' | b'\'')) {
                    i = skip_string(b, i, word.bytes().any(|x| x == b'r' || x == b'R'));
                    operand = true;
                } else if word == "in" {
                    link = true;
                    operand = false;
                } else {
                    ident = Some((word, member));
                    operand = true;
                }
            }
            c if c.is_ascii_digit() => {
                i = skip_number(b, i);
                operand = true;
            }
            b'.' if !operand && next.is_some_and(|n| n.is_ascii_digit()) => {
                i = skip_number(b, i + 1);
                operand = true;
            }
            b'.' => {
                i += 1;
                link = true;
                was_member = true;
                operand = false;
            }
            b'(' | b'[' | b'{' => {
                if c == b'[' && operand {
                    link = true; // an index: x[0]
                }
                let comprehension =
                    c == b'(' && matches!(last_ident, Some((name, true)) if COMPREHENSIONS.contains(&name));
                if link {
                    bump(&mut levels, &mut path);
                    if path > limits.max_expression_chain {
                        return Err(too_long());
                    }
                    link = false;
                }
                if comprehension && levels.iter().any(|l| l.comprehension) {
                    return Err(
                        "a comprehension macro (all, exists, exists_one, map, filter) inside another is not allowed"
                            .into(),
                    );
                }
                levels.push(Level { chain: 0, conditionals: 0, comprehension });
                if levels.len() - 1 > limits.max_expression_depth {
                    return Err(format!(
                        "expression nests (), [] and {{}} more than {} deep; flatten it",
                        limits.max_expression_depth
                    ));
                }
                i += 1;
                operand = false;
            }
            b')' | b']' | b'}' => {
                if levels.len() > 1 {
                    path -= levels.pop().map_or(0, |l| l.chain + l.conditionals);
                }
                i += 1;
                operand = true;
            }
            b',' => {
                reset(&mut levels, &mut path, true);
                i += 1;
                operand = false;
            }
            b'&' | b'|' if next == Some(c) => {
                reset(&mut levels, &mut path, false);
                i += 2;
                operand = false;
            }
            b'?' => {
                if let Some(level) = levels.last_mut() {
                    level.conditionals += 1;
                    path += 1;
                }
                if path > limits.max_expression_chain {
                    return Err(too_long());
                }
                i += 1;
                operand = false;
            }
            b'=' | b'!' | b'<' | b'>' if next == Some(b'=') => {
                link = true;
                i += 2;
                operand = false;
            }
            b'<' | b'>' | b'+' | b'*' | b'/' | b'%' => {
                link = true;
                i += 1;
                operand = false;
            }
            b'-' => {
                link = operand; // binary minus; a unary one stays flat
                i += 1;
                operand = false;
            }
            _ => {
                // `!`, `:` and anything the lexer will refuse.
                i += 1;
                operand = false;
            }
        }
        if link {
            bump(&mut levels, &mut path);
            if path > limits.max_expression_chain {
                return Err(too_long());
            }
        }
        member = was_member;
        last_ident = ident;
    }
    Ok(())
}

fn bump(levels: &mut [Level], path: &mut usize) {
    if let Some(level) = levels.last_mut() {
        level.chain += 1;
        *path += 1;
    }
}

/// Ends the current sub-expression of the innermost level: its chain, and
/// with `conditionals` (at a `,`) its open conditionals too.
fn reset(levels: &mut [Level], path: &mut usize, conditionals: bool) {
    if let Some(level) = levels.last_mut() {
        *path -= level.chain;
        level.chain = 0;
        if conditionals {
            *path -= level.conditionals;
            level.conditionals = 0;
        }
    }
}

/// The index after the string literal starting at `b[i]` (a quote).
fn skip_string(b: &[u8], mut i: usize, raw: bool) -> usize {
    let quote = b[i];
    let triple = b.get(i + 1) == Some(&quote) && b.get(i + 2) == Some(&quote);
    i += if triple { 3 } else { 1 };
    while i < b.len() {
        match b[i] {
            b'\\' if !raw => i += 2,
            q if q == quote && (!triple || (b.get(i + 1) == Some(&quote) && b.get(i + 2) == Some(&quote))) => {
                return i + if triple { 3 } else { 1 };
            }
            b'\n' | b'\r' if !triple => return i,
            _ => i += 1,
        }
    }
    b.len()
}

/// The index after the number starting at `b[i]`: digits, hex digits and
/// suffixes, a fraction, an exponent with its sign.
fn skip_number(b: &[u8], mut i: usize) -> usize {
    loop {
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        match (b.get(i), b.get(i + 1)) {
            (Some(b'.'), Some(d)) if d.is_ascii_digit() => i += 1,
            (Some(b'+' | b'-'), Some(d)) if d.is_ascii_digit() && matches!(b[i - 1], b'e' | b'E') => i += 1,
            _ => return i,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn evaluates_comparisons_over_string_variables() {
        let v = vars(&[("region", "eu"), ("dry_run", "true")]);
        assert_eq!(evaluate(r#"region == "eu""#, &v), Ok(true));
        assert_eq!(evaluate(r#"region == "us" || dry_run == "false""#, &v), Ok(false));
        assert_eq!(evaluate(r#"region.startsWith("e") && size(region) == 2"#, &v), Ok(true));
    }

    #[test]
    fn what_the_interpreter_does_not_support_is_refused_not_a_panic() {
        // cel-interpreter 0.10 panics (`todo!`) on a macro over a string.
        for source in [r#""s".all(x, x)"#, r#"region.map(x, x) == []"#] {
            let refused = check(source, &["region", "x"], &[], &limits()).expect_err(source);
            assert!(refused.contains("does not support"), "{source}: {refused}");
            let refused = evaluate(source, &vars(&[("region", "eu")])).expect_err(source);
            assert!(refused.contains("does not support"), "{source}: {refused}");
        }
    }

    #[test]
    fn accepts_expressions_over_declared_variables() {
        assert_eq!(check(r#"region == "eu""#, &["region"], &[], &limits()), Ok(()));
        assert_eq!(check("true", &[], &[], &limits()), Ok(()));
    }

    #[test]
    fn refuses_undeclared_variables_by_name() {
        let err = check(r#"region == "eu" && tier == "gold""#, &["region"], &[], &limits()).unwrap_err();
        assert!(err.contains("undeclared variable(s) \"tier\""), "{err}");
    }

    #[test]
    fn refuses_malformed_and_non_bool_expressions() {
        let l = limits();
        assert!(check(r#"region == "#, &["region"], &[], &l).unwrap_err().contains("does not parse"));
        let error = check(r#"region == "eu" &&& x"#, &["region"], &[], &l).unwrap_err();
        assert!(error.contains("at column 18") && error.contains(r#"near "& x""#), "{error}");
        let error = check(r#"region =="#, &["region"], &[], &l).unwrap_err();
        assert!(error.contains("at column 10"), "{error}");
        assert!(check(r#"region"#, &["region"], &[], &l).unwrap_err().contains("must evaluate to a bool"));
        assert!(check("  ", &[], &[], &l).unwrap_err().contains("empty"));
        assert!(check("region + 1 == 2", &["region"], &[], &l).is_err());
    }

    /// The attacks of issue 9, each refused by the scan before the parser runs.
    #[test]
    fn the_scan_refuses_what_would_overflow_the_parser() {
        let l = limits();
        let cases = [
            (format!("{}a{}", "(".repeat(512), ")".repeat(512)), "nests"),
            (format!("{}{}", "[".repeat(256), "]".repeat(256)), "nests"),
            (format!("{}1{}", "{1:".repeat(100), "}".repeat(100)), "nests"),
            (format!("a{}", ".b".repeat(5000)), "bytes"),
            (format!("a{}", ".b".repeat(1000)), "chains"),
            (format!("a{}", " + a".repeat(100)), "chains"),
            (format!("a{}", "[0]".repeat(100)), "chains"),
            (format!("{}c", "a ? b : ".repeat(100)), "chains"),
            (format!("{}c", "a ? b : a || ".repeat(100)), "chains"),
            (format!("{}c", "a ? b : a && ".repeat(100)), "chains"),
            (format!("a{}", ".size()".repeat(100)), "chains"),
            ("x".repeat(5000), "bytes"),
            ("[1].all(x, [1].all(y, true))".to_string(), "inside another"),
        ];
        for (source, says) in cases {
            let err = scan(&source, &l).unwrap_err();
            assert!(err.contains(says), "{says}: {err}");
            assert!(check(&source, &["a", "b", "c"], &[], &l).is_err());
        }
    }

    #[test]
    fn the_scan_counts_chains_per_path_and_resets_at_commas_and_logical_operators() {
        let l = Limits { max_expression_chain: 3, max_expression_depth: 2, ..limits() };
        assert!(scan("a.b.c.d", &l).is_ok()); // 3 links
        assert!(scan("a.b.c.d.e", &l).is_err());
        assert!(scan("a + b + c + d", &l).is_ok());
        assert!(scan("a + b + c + d + e", &l).is_err());
        // Links add up over the brackets around them.
        assert!(scan("a + (b + (c + d))", &l).is_ok());
        assert!(scan("a + b + (c + (d + e))", &l).is_err());
        // Sub-expressions separated by `,`, `&&`, `||` are siblings, not a chain.
        assert!(scan("a + b + c && a + b + c || a + b + c", &l).is_ok());
        // … but conditionals nest across `&&` and `||`, which bind tighter.
        assert!(scan("a ? b : c || d ? e : f || g ? h : i", &l).is_ok());
        assert!(scan("a ? b : c || d ? e : f || g ? h : i || j ? k : l", &l).is_err());
        assert!(scan("[a ? b : c, a ? b : c, a ? b : c, a ? b : c]", &l).is_ok());
        assert!(scan("[a + b + c, a + b + c, a + b + c]", &l).is_ok());
        // Unary operators and comparisons spelled in strings do not count.
        assert!(scan("!!!!!!a == -----b", &l).is_ok());
        assert!(scan(r#""a.b.c.d.e.f" == 'x+y+z+w' && r"((((((" == """)))))))""""#, &l).is_ok());
        assert!(scan("a == 1.5e+10 && b == .5 && c == 0x1Fu // a.b.c.d.e.f", &l).is_ok());
        assert!(scan("((a))", &l).is_ok());
        assert!(scan("(((a)))", &l).is_err());
        // Unbalanced text is the parser's to refuse; the scan only measures.
        assert!(scan(")))a(((", &l).is_err());
        assert!(scan("]]]", &l).is_ok());
    }

    /// The largest expressions the limits allow parse, and are checked and
    /// evaluated, on a 256 KiB stack: an eighth of a tokio worker's.
    #[test]
    fn the_parser_survives_the_deepest_expression_allowed_on_a_small_stack() {
        let l = limits();
        let (depth, chain) = (l.max_expression_depth, l.max_expression_chain);
        let inner_chain = chain - 2 * depth; // the links around the brackets use up part of the chain
        let worst = vec![
            // Every bracket kind at full depth, with a full chain inside.
            format!("{}a{}{}", "(".repeat(depth), " + a".repeat(chain), ")".repeat(depth)),
            format!("{}{}", "[".repeat(depth), "]".repeat(depth)),
            format!("{}a{}", "{1:".repeat(depth), "}".repeat(depth)),
            format!("{}a{}", "size(".repeat(depth), ")".repeat(depth)),
            format!("{}a{}{}", "[(".repeat(depth / 2), ".b".repeat(chain), ")]".repeat(depth / 2)),
            // Chains at every level.
            format!("{}a{}", "a + (".repeat(depth), ")".repeat(depth)),
            format!("a{}{}", "[a.b.c".repeat(depth), "]".repeat(depth)),
            format!("{}a{}{}", "(a.b + ".repeat(depth), ".c".repeat(inner_chain), ")".repeat(depth)),
            // Full chains of each kind.
            format!("a{}", ".b".repeat(chain)),
            format!("a{}", ".size()".repeat(chain)),
            format!("a{}", "[0]".repeat(chain)),
            format!("a{}", " == a".repeat(chain)),
            format!("a{}", " in a".repeat(chain)),
            format!("{}c", "a ? b : ".repeat(chain)),
            format!("{}c", "a ? b : a || ".repeat(chain)),
            format!("{}c", "a ? b : a.b.c && ".repeat(chain / 2)),
            // Flat but long: up to the length limit.
            format!("a{}", " || a".repeat(800)),
            format!("{}a", "!".repeat(4000)),
            format!("[{}1]", "1, ".repeat(1300)),
            format!("[{}].all(x, x == 1)", "1,".repeat(2000)),
            "region ==".to_string(),
        ];
        for source in &worst {
            assert!(source.len() <= l.max_expression_bytes, "{} bytes", source.len());
            assert_eq!(scan(source, &l), Ok(()), "{}", &source[..source.len().min(80)]);
        }
        on_small_stack(move || {
            for source in &worst {
                let _ = check(source, &["a", "b", "c"], &[], &l);
                let _ = evaluate(source, &vars(&[("a", "x"), ("b", "y"), ("c", "z")]));
            }
        });
    }

    fn on_small_stack(f: impl FnOnce() + Send + 'static) {
        std::thread::Builder::new().stack_size(256 * 1024).spawn(f).expect("thread").join().expect("no panic");
    }

    mod generated {
        use proptest::prelude::*;

        use super::*;

        /// Token soups: whatever the scan accepts must parse (or fail to)
        /// without overflowing a 256 KiB stack.
        fn tokens() -> impl Strategy<Value = String> {
            let token = prop::sample::select(vec![
                "a", "b", ".c", "(", ")", "[", "]", "{", "}", ",", ":", "?", "+", "-", "!", "==", "&&", "||", " in ",
                "1", "\"s\"", ".size()", "size(", ".all(x, ", ".map(x, ", "[0]", " ", "'", "\"\"\"", "r'", "`a`", "//",
                "\n", "1.5e+3", ".5", "true", "null", "{1: 2}",
            ]);
            prop::collection::vec(token, 0..400).prop_map(|t| t.concat())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
            #[test]
            fn what_the_scan_accepts_never_overflows(sources in prop::collection::vec(tokens(), 16)) {
                let l = Limits::default();
                let accepted: Vec<String> = sources.into_iter().filter(|s| scan(s, &l).is_ok()).collect();
                on_small_stack(move || {
                    for s in &accepted {
                        let _ = check(s, &["a", "b"], &[], &l);
                    }
                });
            }

            #[test]
            fn the_scan_never_panics(source in ".{0,600}") {
                let _ = scan(&source, &Limits::default());
            }
        }
    }
}
