//! Credentials in the configuration: the HS256 token secret, bearer tokens,
//! the key secret variables are sealed with, and a database URL that holds
//! a password.
//!
//! `/proc/PID/cmdline` is readable by every user of the machine (and by
//! every task a worker runs), so none of them is accepted on a command line:
//! each comes from its environment variable or from a file (`--…-file`).
//! At start-up `serve`, `dev` and `worker` blank them in their own
//! environment block and make themselves non-dumpable, so a task cannot read
//! them back through `/proc/PPID/environ` or `/proc/PPID/mem`. Database URLs
//! are redacted before they are logged.

use std::path::Path;

use clap::{ArgMatches, parser::ValueSource};

/// An option that carries a credential, and where it may come from instead.
#[derive(Debug)]
pub struct CredentialOption {
    /// clap's id of the argument (the field name in `cli.rs`).
    pub id: &'static str,
    pub flag: &'static str,
    pub env: &'static str,
    pub file_flag: &'static str,
}

/// Every option that carries a credential, in every command that has it
/// (`--token` is the worker's, `dev`'s built-in worker's and the client's).
pub const CREDENTIAL_OPTIONS: [CredentialOption; 4] = [
    CredentialOption {
        id: "auth_hs256_secret",
        flag: "--auth-hs256-secret",
        env: "REPRISE_AUTH_HS256_SECRET",
        file_flag: "--auth-hs256-secret-file",
    },
    CredentialOption { id: "token", flag: "--token", env: "REPRISE_TOKEN", file_flag: "--token-file" },
    CredentialOption {
        id: "secrets_key",
        flag: "--secrets-key",
        env: "REPRISE_SECRETS_KEY",
        file_flag: "--secrets-key-file",
    },
    CredentialOption {
        id: "database_url",
        flag: "--database-url",
        env: "REPRISE_DATABASE_URL",
        file_flag: "--database-url-file",
    },
];

/// Refuses a credential typed on the command line, naming the environment
/// variable and the file flag to use instead. A database URL counts only
/// when it holds a password or another secret parameter.
pub fn refuse_on_command_line(matches: &ArgMatches) -> Result<(), String> {
    for option in &CREDENTIAL_OPTIONS {
        // Asking clap about an id the command does not have panics in debug builds.
        if !matches.ids().any(|id| id.as_str() == option.id)
            || matches.value_source(option.id) != Some(ValueSource::CommandLine)
        {
            continue;
        }
        let what = if option.id == "database_url" {
            let url = matches.get_one::<String>(option.id).map(String::as_str).unwrap_or_default();
            if !url_has_credentials(url) {
                continue;
            }
            format!("a {} that holds a password", option.flag)
        } else {
            option.flag.to_owned()
        };
        return Err(format!(
            "{what} is not accepted on the command line, where every user of this machine can read it \
             (/proc/PID/cmdline): set the environment variable {} or give {} PATH instead",
            option.env, option.file_flag
        ));
    }
    match matches.subcommand() {
        Some((_, sub)) => refuse_on_command_line(sub),
        None => Ok(()),
    }
}

/// The credential given directly (from its environment variable) or read
/// from its file; both at once is an error.
pub fn value_or_file(
    value: Option<String>,
    file: Option<&Path>,
    option: &CredentialOption,
) -> anyhow::Result<Option<String>> {
    match (value, file) {
        (Some(_), Some(_)) => {
            anyhow::bail!("{} and {} (or {}) exclude each other", option.file_flag, option.env, option.flag)
        }
        (Some(value), None) => Ok(Some(value)),
        (None, Some(path)) => read_file(path, option).map(Some),
        (None, None) => Ok(None),
    }
}

/// The option whose clap id is `id`.
pub fn option(id: &str) -> &'static CredentialOption {
    CREDENTIAL_OPTIONS.iter().find(|o| o.id == id).expect("a known credential option")
}

/// A credential file's content without its final line break.
pub fn read_file(path: &Path, option: &CredentialOption) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("{} {}: cannot read it: {e}", option.file_flag, path.display()))?;
    let value = text.trim_end_matches(['\n', '\r']);
    anyhow::ensure!(!value.is_empty(), "{} {}: the file is empty", option.file_flag, path.display());
    Ok(value.to_owned())
}

/// The environment variables blanked by [`scrub_environment`]: every
/// credential that may come from the environment.
pub fn credential_variables() -> Vec<&'static str> {
    CREDENTIAL_OPTIONS.iter().map(|o| o.env).collect()
}

/// Overwrites the values of `names` in this process's environment block
/// with NUL bytes, so `/proc/PID/environ` (the block as the process was
/// started with it) shows them empty, even to a reader that is root.
///
/// Must run before the process starts threads or reads these variables
/// again: it writes to memory that `getenv` reads.
#[cfg(unix)]
pub fn scrub_environment(names: &[&str]) {
    use std::ffi::{CStr, c_char};
    unsafe extern "C" {
        static mut environ: *mut *mut c_char;
    }
    // SAFETY: `environ` is the NULL-terminated array of NUL-terminated
    // strings the C runtime set up; we only overwrite bytes inside those
    // strings, before any other thread exists (see above).
    unsafe {
        let mut entry = environ;
        if entry.is_null() {
            return;
        }
        while !(*entry).is_null() {
            let text = CStr::from_ptr(*entry).to_bytes();
            if let Some(name) =
                names.iter().find(|n| text.len() > n.len() && text.starts_with(n.as_bytes()) && text[n.len()] == b'=')
            {
                let start = name.len() + 1;
                std::ptr::write_bytes((*entry).add(start), 0, text.len() - start);
            }
            entry = entry.add(1);
        }
    }
}

#[cfg(not(unix))]
pub fn scrub_environment(_names: &[&str]) {}

/// Makes the process non-dumpable: `/proc/PID/environ`, `/mem`, `/fd` and
/// the like become root's and unreadable to other processes of the same user
/// (tasks included), no core dump is written, and ptrace attach is refused.
/// Its children are dumpable again after `exec`.
#[cfg(target_os = "linux")]
pub fn forbid_inspection() -> std::io::Result<()> {
    // SAFETY: PR_SET_DUMPABLE takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

#[cfg(not(target_os = "linux"))]
pub fn forbid_inspection() -> std::io::Result<()> {
    Ok(())
}

/// Query parameter names whose values are secrets (`password`,
/// `sslpassword`, …), compared without case.
fn is_secret_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["password", "passwd", "pwd", "secret", "token"].iter().any(|s| name.contains(s))
}

/// A database URL safe to log: the password of `user:password@` and the
/// values of secret query parameters (`password=`, `sslpassword=`, …)
/// become `***`. Text that is not a URL is hidden whole if it names one.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        let secret = url
            .split(|c: char| c.is_whitespace() || c == ';')
            .any(|part| part.split_once('=').is_some_and(|(name, _)| is_secret_parameter(name.trim())));
        return if secret { "*** (redacted: not a URL)".to_owned() } else { url.to_owned() };
    };
    let (head, rest) = url.split_at(scheme_end + 3);
    // A raw `?` cannot be in a password of a URL that parses, so userinfo
    // ends at the last `@` before the query; a password may hold raw `@`s.
    let (before_query, query) = match rest.find('?') {
        Some(q) => (&rest[..q], Some(&rest[q + 1..])),
        None => (rest, None),
    };
    let mut out = String::from(head);
    match before_query.rfind('@') {
        Some(at) => {
            match before_query[..at].split_once(':') {
                Some((user, _password)) => {
                    out.push_str(user);
                    out.push_str(":***");
                }
                None => out.push_str(&before_query[..at]),
            }
            out.push_str(&before_query[at..]);
        }
        None => out.push_str(before_query),
    }
    if let Some(query) = query {
        out.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if is_secret_parameter(name) => format!("{name}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    out
}

/// True when the URL holds a password or a secret parameter.
pub fn url_has_credentials(url: &str) -> bool {
    redact_url(url) != url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_credential_form_in_a_database_url_is_redacted() {
        let cases = [
            ("postgres://app:s3cret@db:5432/reprise", "postgres://app:***@db:5432/reprise"),
            ("postgres://:s3cret@db/reprise", "postgres://:***@db/reprise"),
            ("postgres://app:p@ss@w0rd@db/reprise", "postgres://app:***@db/reprise"),
            ("postgresql://app:a:b@db/reprise?sslmode=require", "postgresql://app:***@db/reprise?sslmode=require"),
            ("postgres://db/reprise?user=app&password=s3cret", "postgres://db/reprise?user=app&password=***"),
            (
                "postgres://app@db/reprise?sslmode=verify-full&sslpassword=k3y&application_name=reprise",
                "postgres://app@db/reprise?sslmode=verify-full&sslpassword=***&application_name=reprise",
            ),
            ("postgres://db/reprise?PASSWORD=s3cret", "postgres://db/reprise?PASSWORD=***"),
            ("postgres://u:s3cret@db/r?password=again", "postgres://u:***@db/r?password=***"),
            ("postgres://db/r?auth_token=t0k", "postgres://db/r?auth_token=***"),
            ("host=db user=app password=s3cret", "*** (redacted: not a URL)"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
            assert!(!redact_url(url).contains("s3cret") && url_has_credentials(url), "{url}");
        }
    }

    #[test]
    fn urls_without_credentials_are_logged_as_they_are() {
        for url in [
            "sqlite://reprise.db",
            "sqlite:///var/lib/reprise/reprise.db?mode=rwc",
            "postgres://app@db:5432/reprise",
            "postgres://db/reprise?sslmode=require&options=-c%20search_path%3Dx@y",
            "host=db user=app",
        ] {
            assert_eq!(redact_url(url), url);
            assert!(!url_has_credentials(url), "{url}");
        }
    }

    #[test]
    fn credential_files_lose_their_final_line_break_and_must_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "abc.def.ghi\r\n").unwrap();
        let token = option("token");
        assert_eq!(value_or_file(None, Some(&path), token).unwrap().as_deref(), Some("abc.def.ghi"));
        std::fs::write(&path, "\n").unwrap();
        assert!(value_or_file(None, Some(&path), token).unwrap_err().to_string().contains("empty"));
        let both = value_or_file(Some("x".into()), Some(&path), token).unwrap_err().to_string();
        assert!(both.contains("--token-file") && both.contains("REPRISE_TOKEN"), "{both}");
        assert_eq!(value_or_file(None, None, token).unwrap(), None);
    }
}
