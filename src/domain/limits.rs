//! Every caller-supplied size, count and depth has a limit, and every string
//! the server stores a cap. The numbers live in one [`Limits`] value (server
//! flags later), passed where they are checked; the checks here are cheap and
//! linear, so they run at the edge before anything expensive or recursive.
//!
//! Also here: [`quote`], the one way a message echoes caller input.

use super::Violation;

/// The limits on what a caller may send. Byte lengths are of the UTF-8 text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Names: application, pipeline, stage, workflow, variable, task queue,
    /// environment, user group, artifact.
    pub max_name_bytes: usize,
    /// Token subjects: the caller's, and a group member's.
    pub max_subject_bytes: usize,
    /// Caller-chosen request ids (StartExecution, Resume).
    pub max_request_id_bytes: usize,
    /// A worker's id (PollTask).
    pub max_worker_id_bytes: usize,
    /// Why an execution was aborted.
    pub max_reason_bytes: usize,
    /// An approver's comment.
    pub max_comment_bytes: usize,
    /// Free text of a pipeline, a variable or an approval stage.
    pub max_description_bytes: usize,
    /// A workflow's command.
    pub max_command_bytes: usize,
    /// Variables a pipeline declares, and variables a start binds.
    pub max_variables: usize,
    /// A variable's value (default or bound).
    pub max_variable_value_bytes: usize,
    /// Artifacts of a start.
    pub max_artifacts: usize,
    /// An artifact's version or build.
    pub max_artifact_version_bytes: usize,
    /// A skip condition's text.
    pub max_expression_bytes: usize,
    /// Nesting of (), [] and {} in a skip condition.
    pub max_expression_depth: usize,
    /// Operators and member accesses chained along any path of a skip
    /// condition (`a.b.c`, `x + y + z`, `l[0][1]`, `c ? x : d ? y : z`),
    /// added up over the nesting levels around it. `&&`, `||`, `!` and
    /// unary `-` do not count: the parser keeps them flat.
    pub max_expression_chain: usize,
    /// Stages of a pipeline.
    pub max_stages: usize,
    /// Workflows of one stage.
    pub max_workflows_per_stage: usize,
    /// Workflows of a whole pipeline.
    pub max_workflows: usize,
    /// The encoded (protobuf) definition of a pipeline.
    pub max_definition_bytes: usize,
    /// A workflow's timeout, in milliseconds.
    pub max_workflow_timeout_ms: u64,
    /// An approval stage's timeout, in milliseconds.
    pub max_approval_timeout_ms: u64,
    /// The output a CompleteTask may carry; the server keeps its tail.
    pub max_output_bytes: usize,
    /// How much of a task's output the server keeps (the end of it).
    pub kept_output_bytes: usize,
    /// A CompleteTask message is cut to this length (with a marker), not refused.
    pub max_message_bytes: usize,
    /// A page token.
    pub max_page_token_bytes: usize,
    /// ListPipelines with the FULL view stops a page before its encoded
    /// size would pass this, so a default client (4 MiB) can receive it.
    pub max_list_response_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_name_bytes: 128,
            max_subject_bytes: 256,
            max_request_id_bytes: 128,
            max_worker_id_bytes: 128,
            max_reason_bytes: 1024,
            max_comment_bytes: 1024,
            max_description_bytes: 4096,
            max_command_bytes: 32 * 1024,
            max_variables: 100,
            max_variable_value_bytes: 4096,
            max_artifacts: 100,
            max_artifact_version_bytes: 256,
            max_expression_bytes: 4096,
            max_expression_depth: 16,
            max_expression_chain: 64,
            max_stages: 500,
            max_workflows_per_stage: 1000,
            max_workflows: 20_000,
            max_definition_bytes: 2 * 1024 * 1024,
            max_workflow_timeout_ms: 7 * 24 * 3600 * 1000,
            max_approval_timeout_ms: 30 * 24 * 3600 * 1000,
            max_output_bytes: 1024 * 1024,
            kept_output_bytes: 64 * 1024,
            max_message_bytes: 4096,
            max_page_token_bytes: 256,
            max_list_response_bytes: 3 * 1024 * 1024,
        }
    }
}

/// How many characters of caller input a message quotes.
pub const QUOTED_CHARS: usize = 64;

/// Caller input as a message quotes it: in quotes and escaped, cut after
/// [`QUOTED_CHARS`] characters with `…` after the closing quote. Every
/// message that echoes caller input goes through here, so no message grows
/// with what a caller sent.
pub fn quote(input: &str) -> String {
    match input.char_indices().nth(QUOTED_CHARS) {
        None => format!("{input:?}"),
        Some((cut, _)) => format!("{:?}…", &input[..cut]),
    }
}

/// A map key inside a field path, e.g. `variables[region]`: as written when
/// short and plain, quoted and cut otherwise.
pub fn key_path(field: &str, key: &str) -> String {
    let plain = key.len() <= QUOTED_CHARS
        && !key.is_empty()
        && key.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    if plain { format!("{field}[{key}]") } else { format!("{field}[{}]", quote(key)) }
}

/// What a string may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Text {
    /// Free text: anything but NUL, which no database column can store.
    Free,
    /// A name or token: no NUL and no other control character.
    Name,
}

/// Checks one string: its length against `max` bytes and its characters;
/// `required` refuses an empty (or blank) value. Pushes at most one violation.
pub fn check_text(out: &mut Vec<Violation>, field: &str, value: &str, max: usize, kind: Text, required: bool) {
    if let Some(v) = text_violation(field, value, max, kind, required) {
        out.push(v);
    }
}

/// [`check_text`] for a single field.
pub fn text(field: &str, value: &str, max: usize, kind: Text, required: bool) -> Result<(), Violation> {
    text_violation(field, value, max, kind, required).map_or(Ok(()), Err)
}

fn text_violation(field: &str, value: &str, max: usize, kind: Text, required: bool) -> Option<Violation> {
    if required && value.trim().is_empty() {
        return Some(Violation::new(field, "required"));
    }
    if value.len() > max {
        return Some(Violation::new(field, format!("at most {max} bytes, got {}", value.len())));
    }
    if value.contains('\0') {
        return Some(Violation::new(field, "must not contain NUL (\\0) characters"));
    }
    if kind == Text::Name && value.chars().any(char::is_control) {
        return Some(Violation::new(field, "must not contain control characters"));
    }
    None
}

/// An identifier the server issued (a UUID), in the form the server writes
/// it (lowercase, hyphenated). A malformed one is refused here, so a
/// well-formed id that names nothing is NOT_FOUND on every backend alike.
pub fn id(field: &str, value: &str) -> Result<String, Violation> {
    if value.trim().is_empty() {
        return Err(Violation::new(field, "required"));
    }
    // The longest form the parser accepts is the URN form, 45 bytes; a
    // longer value is not an id, and is not worth parsing.
    match (value.len() <= 45).then(|| uuid::Uuid::try_parse(value).ok()).flatten() {
        Some(uuid) => Ok(uuid.hyphenated().to_string()),
        None => Err(Violation::new(
            field,
            format!("{} is not an id this server issued (a UUID such as 0190b6c4-…)", quote(value)),
        )),
    }
}

/// [`id`] for an optional field: empty means unset.
pub fn optional_id(field: &str, value: &str) -> Result<Option<String>, Violation> {
    if value.is_empty() { Ok(None) } else { id(field, value).map(Some) }
}

/// Cuts `text` to at most `max` bytes (on a character boundary), marking
/// the cut; text within the limit is returned unchanged.
pub fn truncate_marked(text: &str, max: usize) -> String {
    const MARK: &str = "… [truncated]";
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub(MARK.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &text[..end])
}

/// The last `max` bytes of `text` at most (starting on a character boundary).
pub fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// NUL characters replaced by U+FFFD, for text the server keeps but does
/// not refuse (a task's output and message, which come from processes).
pub fn without_nul(text: String) -> String {
    if text.contains('\0') { text.replace('\0', "\u{FFFD}") } else { text }
}

/// The name of the environment variable a worker sets for artifact `name`.
pub fn artifact_env_name(name: &str) -> String {
    let suffix: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    format!("REPRISE_ARTIFACT_{suffix}")
}

/// The name of the environment variable a worker sets for variable `name`.
pub fn variable_env_name(name: &str) -> String {
    format!("REPRISE_VAR_{}", name.to_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_cuts_long_input_and_escapes() {
        assert_eq!(quote("web"), "\"web\"");
        assert_eq!(quote("a\0b"), "\"a\\0b\"");
        let long = "x".repeat(100_000);
        let q = quote(&long);
        assert_eq!(q, format!("\"{}\"…", "x".repeat(QUOTED_CHARS)));
        // Multi-byte characters are cut on a character boundary.
        let q = quote(&"é".repeat(100));
        assert!(q.ends_with('…') && q.chars().filter(|c| *c == 'é').count() == QUOTED_CHARS, "{q}");
    }

    #[test]
    fn key_paths_quote_odd_keys_only() {
        assert_eq!(key_path("variables", "region"), "variables[region]");
        assert_eq!(key_path("artifacts", "a b"), "artifacts[\"a b\"]");
        assert!(key_path("artifacts", &"k".repeat(1000)).len() < 100);
    }

    #[test]
    fn text_checks_length_nul_and_control_characters() {
        let check = |value: &str, kind, required| text("f", value, 8, kind, required).map_err(|v| v.description);
        assert_eq!(check("ok", Text::Name, true), Ok(()));
        assert_eq!(check("", Text::Name, false), Ok(()));
        assert_eq!(check(" ", Text::Name, true), Err("required".into()));
        assert_eq!(check("123456789", Text::Free, false), Err("at most 8 bytes, got 9".into()));
        assert!(check("a\0", Text::Free, false).unwrap_err().contains("NUL"));
        assert_eq!(check("a\nb", Text::Free, false), Ok(()));
        assert!(check("a\nb", Text::Name, false).unwrap_err().contains("control"));
    }

    #[test]
    fn ids_are_uuids_normalized_to_the_issued_form() {
        let issued = uuid::Uuid::now_v7().to_string();
        assert_eq!(id("execution_id", &issued), Ok(issued.clone()));
        assert_eq!(id("execution_id", &issued.to_uppercase()), Ok(issued.clone()));
        assert_eq!(id("execution_id", &issued.replace('-', "")), Ok(issued.clone()));
        for bad in ["nope", "\0", &"a".repeat(100_000), "0190b6c4-0000-7000-8000-00000000000g"] {
            let v = id("execution_id", bad).unwrap_err();
            assert_eq!(v.field, "execution_id");
            assert!(v.description.len() < 200, "{}", v.description);
        }
        assert_eq!(id("execution_id", "").unwrap_err().description, "required");
        assert_eq!(optional_id("pipeline_id", ""), Ok(None));
    }

    #[test]
    fn truncation_marks_the_cut_and_keeps_utf8() {
        assert_eq!(truncate_marked("short", 100), "short");
        let cut = truncate_marked(&"é".repeat(5000), 4096);
        assert!(cut.len() <= 4096 && cut.ends_with("[truncated]"), "{}", cut.len());
        assert_eq!(without_nul("a\0b".into()), "a\u{FFFD}b");
        assert_eq!(tail("abcdef", 3), "def");
        assert_eq!(tail("éé", 3), "é");
    }

    #[test]
    fn environment_names_follow_the_worker() {
        assert_eq!(artifact_env_name("web-1"), artifact_env_name("web_1"));
        assert_eq!(artifact_env_name("web.ui"), "REPRISE_ARTIFACT_WEB_UI");
        assert_eq!(variable_env_name("region"), variable_env_name("REGION"));
    }
}
