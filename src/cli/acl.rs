//! `sluice acl grant|revoke|list` over the TCP protocol, and
//! `sluice hash-password` for the `[auth]` section of sluice.toml.

use std::io::{BufRead, Read};
use std::process::ExitCode;

use anyhow::{bail, Context};
use sluice::auth::{hash_password as argon2_hash, PASSWORD_SALT_BYTES};
use sluice::model::acl::{AclOperations, AclRule};

use super::hints::{connect, explain, Subject, Target};
use super::AclCommand;

pub fn run(target: &Target, command: AclCommand) -> anyhow::Result<ExitCode> {
    let mut client = connect(target)?;
    match command {
        AclCommand::Grant(args) => {
            let rule = AclRule {
                principal: args.principal,
                stream_pattern: args.stream,
                operations: AclOperations::of(args.ops),
            };
            client
                .grant_acl(&rule)
                .map_err(|e| explain(e, Subject::stream(&rule.stream_pattern)))?;
            println!(
                "granted {} on {} to {}",
                rule.operations, rule.stream_pattern, rule.principal
            );
        }
        AclCommand::Revoke(args) => {
            let rule = AclRule {
                principal: args.principal,
                stream_pattern: args.stream,
                operations: AclOperations::of(args.ops),
            };
            client
                .revoke_acl(&rule)
                .map_err(|e| explain(e, Subject::stream(&rule.stream_pattern)))?;
            let what = if rule.operations.is_empty() {
                "every operation".to_owned()
            } else {
                rule.operations.to_string()
            };
            println!(
                "revoked {what} on {} from {}",
                rule.stream_pattern, rule.principal
            );
        }
        AclCommand::List { principal } => {
            let rules = client
                .list_acls(principal.as_deref())
                .map_err(|e| explain(e, Subject::default()))?;
            if rules.is_empty() {
                eprintln!("no ACL rules: add one with `sluice acl grant --principal NAME --stream PATTERN --ops OPS`");
            } else {
                print!("{}", list_text(&rules));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One row per rule, columns aligned.
fn list_text(rules: &[AclRule]) -> String {
    let rows: Vec<[String; 3]> = std::iter::once([
        "PRINCIPAL".to_owned(),
        "STREAM".to_owned(),
        "OPERATIONS".to_owned(),
    ])
    .chain(rules.iter().map(|rule| {
        [
            rule.principal.clone(),
            rule.stream_pattern.clone(),
            rule.operations.to_string(),
        ]
    }))
    .collect();
    let width = |i: usize| rows.iter().map(|r| r[i].len()).max().unwrap_or(0);
    let (w0, w1) = (width(0), width(1));
    rows.iter()
        .map(|[p, s, o]| format!("{p:<w0$}  {s:<w1$}  {o}\n"))
        .collect()
}

/// Reads a password from stdin's first line and prints its Argon2id hash.
pub fn hash_password() -> anyhow::Result<ExitCode> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        bail!("no password on stdin — e.g. printf '%s' 'correct horse' | sluice hash-password");
    }
    let mut salt = [0u8; PASSWORD_SALT_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut salt))
        .context("reading a random salt from /dev/urandom")?;
    println!("{}", argon2_hash(password, &salt)?);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice::model::acl::AclOperation;

    #[test]
    fn rules_list_in_aligned_columns() {
        let text = list_text(&[AclRule {
            principal: "alice".into(),
            stream_pattern: "orders.*".into(),
            operations: AclOperations::of([AclOperation::Publish, AclOperation::Fetch]),
        }]);
        assert_eq!(
            text,
            "PRINCIPAL  STREAM    OPERATIONS\nalice      orders.*  publish,fetch\n"
        );
    }
}
