//! Fault injection at the engine's I/O points, for tests.
//!
//! Compiled in only with the cargo feature `fault-injection` (and in this
//! crate's own unit tests); in every other build [`check`] is an inlined
//! `Ok(())` and nothing else here exists, so a production binary cannot be
//! made to fail on purpose.
//!
//! A fault is a rule: an I/O point, a substring of the file's path and the
//! errno to fail with. Every operation at that point on a matching path fails
//! *before* the real syscall, as the kernel would have failed it. Rules come
//! from two places:
//!
//! * in-process, `inject` and `clear` (with the `fault-injection` feature;
//!   unit tests: each test matches on its own temporary directory, so
//!   parallel tests do not see each other's faults);
//! * a rules file named by the environment variable [`FAULTS_FILE_ENV`]
//!   (end-to-end tests arm a running `sluice` process): while the file exists
//!   it is read at every check, one rule per line,
//!   `<point> <errno> <path-substring>`, e.g. `fdatasync EIO /orders-1/0/`.
//!   Removing the file disarms it.

// Safe code only: the syscalls live in `io` itself.
#![deny(unsafe_code)]

#[cfg(not(any(test, feature = "fault-injection")))]
use std::io;
#[cfg(not(any(test, feature = "fault-injection")))]
use std::path::Path;

/// Environment variable naming the rules file of a fault-injection build.
pub const FAULTS_FILE_ENV: &str = "SLUICE_FAULTS";

/// Where a fault can be injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultPoint {
    /// `pwrite` of a batch or of an index entry.
    Write,
    /// `fdatasync` of a segment (the group commit, a seal, recovery).
    Fdatasync,
    /// `fallocate` of a segment.
    Preallocate,
    /// Creating a segment, index or checkpoint file.
    Create,
}

impl FaultPoint {
    /// The name used in rules files.
    pub const fn name(self) -> &'static str {
        match self {
            FaultPoint::Write => "write",
            FaultPoint::Fdatasync => "fdatasync",
            FaultPoint::Preallocate => "preallocate",
            FaultPoint::Create => "create",
        }
    }

    /// The point named `name` in a rules file (the inverse of `name()`).
    pub fn parse(name: &str) -> Option<FaultPoint> {
        [
            FaultPoint::Write,
            FaultPoint::Fdatasync,
            FaultPoint::Preallocate,
            FaultPoint::Create,
        ]
        .into_iter()
        .find(|point| point.name() == name)
    }
}

#[cfg(any(test, feature = "fault-injection"))]
pub use armed::{check, clear, inject};

#[cfg(not(any(test, feature = "fault-injection")))]
/// Always succeeds: fault injection is not compiled into this build.
#[inline(always)]
pub fn check(_point: FaultPoint, _path: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(any(test, feature = "fault-injection"))]
mod armed {
    use std::io;
    use std::path::Path;
    use std::sync::Mutex;

    use super::{FaultPoint, FAULTS_FILE_ENV};

    /// Rules files longer than this are ignored (they are written by tests).
    const RULES_FILE_BYTES_MAX: u64 = 64 * 1024;

    #[derive(Clone, Debug)]
    struct Rule {
        point: FaultPoint,
        path_contains: String,
        errno: i32,
    }

    /// In-process rules. A lock is fine here: this exists only in test
    /// builds, never on a production data path.
    static RULES: Mutex<Vec<Rule>> = Mutex::new(Vec::new());

    /// Makes every `point` operation on a path containing `path_contains`
    /// fail with `errno` until [`clear`] is called with the same substring.
    pub fn inject(point: FaultPoint, path_contains: impl Into<String>, errno: i32) {
        let rule = Rule {
            point,
            path_contains: path_contains.into(),
            errno,
        };
        RULES.lock().unwrap_or_else(|e| e.into_inner()).push(rule);
    }

    /// Removes every in-process rule whose substring is `path_contains`.
    pub fn clear(path_contains: &str) {
        RULES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|rule| rule.path_contains != path_contains);
    }

    /// The injected error for `point` on `path`, if a rule matches.
    pub fn check(point: FaultPoint, path: &Path) -> io::Result<()> {
        let path = path.to_string_lossy();
        let matches = |rule: &Rule| rule.point == point && path.contains(&rule.path_contains);
        let in_process = RULES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|rule| matches(rule))
            .map(|rule| rule.errno);
        let errno = in_process.or_else(|| {
            rules_from_file()
                .iter()
                .find(|r| matches(r))
                .map(|r| r.errno)
        });
        match errno {
            Some(errno) => {
                tracing::warn!(point = point.name(), %path, errno, "injected I/O fault");
                Err(io::Error::from_raw_os_error(errno))
            }
            None => Ok(()),
        }
    }

    fn rules_from_file() -> Vec<Rule> {
        let Some(file) = std::env::var_os(FAULTS_FILE_ENV) else {
            return Vec::new();
        };
        let small = std::fs::metadata(&file).is_ok_and(|m| m.len() <= RULES_FILE_BYTES_MAX);
        if !small {
            return Vec::new();
        }
        let Ok(text) = std::fs::read_to_string(&file) else {
            return Vec::new();
        };
        text.lines().filter_map(parse_rule).collect()
    }

    fn parse_rule(line: &str) -> Option<Rule> {
        let mut words = line.split_whitespace();
        let point = FaultPoint::parse(words.next()?)?;
        let errno = parse_errno(words.next()?)?;
        let path_contains = words.next().unwrap_or("").to_string();
        Some(Rule {
            point,
            path_contains,
            errno,
        })
    }

    fn parse_errno(word: &str) -> Option<i32> {
        match word {
            "EIO" => Some(libc::EIO),
            "ENOSPC" => Some(libc::ENOSPC),
            "EDQUOT" => Some(libc::EDQUOT),
            "EROFS" => Some(libc::EROFS),
            other => other.parse().ok(),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn rules_parse_and_match_by_point_and_path() {
            let rule = parse_rule("fdatasync EIO /orders-1/0/").expect("rule");
            assert_eq!(rule.point, FaultPoint::Fdatasync);
            assert_eq!(rule.errno, libc::EIO);
            assert_eq!(rule.path_contains, "/orders-1/0/");
            assert!(parse_rule("teleport EIO /x").is_none());
            assert!(parse_rule("write").is_none());
            assert_eq!(
                parse_rule("write 28 /x").map(|r| r.errno),
                Some(libc::ENOSPC)
            );

            let dir = "/fault-unit-test-unique-dir/";
            inject(FaultPoint::Write, dir, libc::ENOSPC);
            let hit = check(
                FaultPoint::Write,
                Path::new("/fault-unit-test-unique-dir/a.log"),
            );
            assert_eq!(hit.err().and_then(|e| e.raw_os_error()), Some(libc::ENOSPC));
            assert!(check(
                FaultPoint::Fdatasync,
                Path::new("/fault-unit-test-unique-dir/a.log")
            )
            .is_ok());
            assert!(check(FaultPoint::Write, Path::new("/elsewhere/a.log")).is_ok());
            clear(dir);
            assert!(check(
                FaultPoint::Write,
                Path::new("/fault-unit-test-unique-dir/a.log")
            )
            .is_ok());
        }
    }
}
