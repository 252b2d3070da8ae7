//! Runners: what a job names to be run. Upstream names container images
//! (`<registry>/calls-recorder:vX.Y.Z`); they are checked as calls-offloader checks
//! them, then mapped to the local program that does that job here.

use std::path::{Path, PathBuf};

/// Upstream's minimum versions of each runner.
const RECORDER_MIN: (u64, u64, u64) = (0, 6, 0);
const TRANSCRIBER_MIN: (u64, u64, u64) = (0, 1, 0);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Recorder,
    Transcriber,
}

/// `vMAJOR.MINOR.PATCH` with an optional `-dev<N>`; no leading zeros (semver).
fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let v = v.strip_prefix('v')?;
    let (core, dev) = match v.split_once('-') {
        Some((c, d)) => (c, Some(d)),
        None => (v, None),
    };
    if let Some(d) = dev {
        let n = d.strip_prefix("dev")?;
        if !n.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
    }
    let mut parts = core.split('.');
    let mut num = || -> Option<u64> {
        let p = parts.next()?;
        if p.is_empty() || (p.len() > 1 && p.starts_with('0')) {
            return None;
        }
        p.parse().ok()
    };
    let out = (num()?, num()?, num()?);
    parts.next().is_none().then_some(out)
}

/// Checks a runner as upstream's `RunnerIsValid`: which kind it is.
pub fn validate(runner: &str, registry: &str, dev_mode: bool) -> Result<Kind, String> {
    if runner.is_empty() {
        return Err("runner should not be empty".into());
    }
    if registry.is_empty() {
        return Err("registry should not be empty".into());
    }
    let kind_of = |r: &str| {
        if r.contains("calls-recorder") {
            Kind::Recorder
        } else {
            Kind::Transcriber
        }
    };
    if dev_mode {
        return Ok(kind_of(runner));
    }
    for (name, kind, min) in [
        ("calls-recorder", Kind::Recorder, RECORDER_MIN),
        ("calls-transcriber", Kind::Transcriber, TRANSCRIBER_MIN),
    ] {
        let Some(tag) = runner.strip_prefix(&format!("{registry}/{name}:")) else {
            continue;
        };
        let Some(v) = parse_version(tag) else {
            continue;
        };
        if v < min {
            return Err(format!(
                "actual version ({}.{}.{}) is lower than minimum supported version ({}.{}.{})",
                v.0, v.1, v.2, min.0, min.1, min.2
            ));
        }
        return Ok(kind);
    }
    Err(format!("failed to validate runner {runner:?}"))
}

/// The local program of a kind of job, or why there is none.
pub fn program(kind: Kind, recorder: &Path) -> Result<PathBuf, String> {
    match kind {
        Kind::Recorder => Ok(recorder.to_path_buf()),
        Kind::Transcriber => Err(
            "no local runner for calls-transcriber: this job service runs recordings only (use upstream's calls-offloader for transcriptions)"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runners_are_checked_as_upstream() {
        let v = |r: &str| validate(r, "mattermost", false);
        assert_eq!(v("mattermost/calls-recorder:v0.8.13"), Ok(Kind::Recorder));
        assert_eq!(
            v("mattermost/calls-recorder:v1.0.0-dev2"),
            Ok(Kind::Recorder)
        );
        assert_eq!(
            v("mattermost/calls-transcriber:v0.7.2"),
            Ok(Kind::Transcriber)
        );
        assert!(v("mattermost/calls-recorder:v0.5.9")
            .unwrap_err()
            .contains("lower than minimum"));
        assert!(v("mattermost/calls-recorder:v01.0.0").is_err());
        assert!(v("evil/calls-recorder:v0.8.13")
            .unwrap_err()
            .contains("failed to validate runner"));
        assert!(v("mattermost/calls-recorder:latest").is_err());
        assert_eq!(v(""), Err("runner should not be empty".into()));
        assert_eq!(
            validate("anything", "", false),
            Err("registry should not be empty".into())
        );
        assert_eq!(
            validate("x/calls-recorder:dev", "mattermost", true),
            Ok(Kind::Recorder)
        );
    }
}
