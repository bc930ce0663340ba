//! Snapshots of scenario runs, in insta's format and workflow, shared by `cargo test` and
//! `harness run`: a changed outcome fails; with updating on, it is written as a `.snap.new`
//! beside the snapshot for `cargo insta review`, never silently accepted. insta's mode comes
//! from its environment (`INSTA_UPDATE`, `CI`), which the CLI sets once, before any thread
//! starts; the library never changes the environment.

use crate::runner::ScenarioRun;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Compares `run` with `dir/{name}.snap`; returns insta's message on a mismatch.
pub fn check(dir: &Path, run: &ScenarioRun) -> Result<(), String> {
    // insta takes a relative path as relative to this source file: make it absolute.
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(&dir);
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    let name = run.snapshot_name();
    let snapshot = run.snapshot();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        settings.bind(|| insta::assert_yaml_snapshot!(name, snapshot));
    }));
    outcome.map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "snapshot differs".into())
    })
}

/// The YAML a run's snapshot holds, as insta writes it.
pub fn yaml(run: &ScenarioRun) -> String {
    use insta::_macro_support::{serialize_value, SerializationFormat};
    serialize_value(&run.snapshot(), SerializationFormat::Yaml)
}

/// Writes `run` as the pending `dir/{name}.snap.new` insta would write for a new snapshot, to
/// review and commit as `.snap`; returns its path.
pub fn write_pending(dir: &Path, name: &str, run: &ScenarioRun) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{name}.snap.new"));
    std::fs::write(
        &path,
        format!(
            "---\nsource: harness/src/snapshot.rs\n---\n{}\n",
            yaml(run).trim_end()
        ),
    )?;
    Ok(path)
}

/// What a snapshot file holds after its header, if the file exists.
fn stored(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let body = text.strip_prefix("---\n")?;
    let end = body.find("\n---\n")?;
    Some(body[end + 5..].to_string())
}

/// Whether `dir/{name}.snap` holds exactly this run (no file: `None`). Never writes, never
/// panics: for asking whether a version's outcome is the default line's.
pub fn equals(dir: &Path, name: &str, run: &ScenarioRun) -> Option<bool> {
    let file = stored(&dir.join(format!("{name}.snap")))?;
    Some(file.trim_end() == yaml(run).trim_end())
}

/// How a run on a line other than the default compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionVerdict {
    /// Its outcome equals the default line's snapshot: no snapshot of its own.
    SameAsDefault,
    /// It matches the snapshot of its own line.
    OwnSnapshot(String),
}

/// Compares a run with its snapshots. On the default nginx line (or an unknown one): its
/// snapshot, as [`check`]. On another line: the default line's snapshot when the outcome is
/// the same, else `{name}@nginx-{line}.snap`, which must then exist and match (and must not
/// exist when the outcome is the same: it would say a difference there is none).
pub fn check_line(dir: &Path, run: &ScenarioRun) -> Result<VersionVerdict, String> {
    let Some(own) = run.line_snapshot_name() else {
        return check(dir, run).map(|()| VersionVerdict::SameAsDefault);
    };
    let same = equals(dir, &run.snapshot_name(), run) == Some(true);
    let own_exists = dir.join(format!("{own}.snap")).exists();
    match (same, own_exists) {
        (true, false) => Ok(VersionVerdict::SameAsDefault),
        (true, true) => Err(format!(
            "{own}.snap is stale: on this line the outcome equals {}.snap; delete it",
            run.snapshot_name()
        )),
        (false, _) => {
            let renamed = ScenarioRun {
                name: own.clone(),
                backend: "reference".into(),
                ..run.clone()
            };
            check(dir, &renamed).map(|()| VersionVerdict::OwnSnapshot(own))
        }
    }
}

/// How a run differs from its snapshot: what to tell the user, and each profile's steps whose
/// snapshot form differs ([`differing_steps`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The message (insta's, or what to do when there is no snapshot yet).
    pub message: String,
    /// Each profile's differing steps, by index.
    pub steps: BTreeMap<String, Vec<usize>>,
}

/// The snapshot a run is compared with: on another nginx line, its line's own where the outcome
/// differs from the default line's snapshot or the line's own exists; else the run's own name.
pub fn compared_name(dir: &Path, run: &ScenarioRun) -> String {
    let own = run.line_snapshot_name().filter(|own| {
        equals(dir, &run.snapshot_name(), run) != Some(true)
            || dir.join(format!("{own}.snap")).exists()
    });
    own.unwrap_or_else(|| run.snapshot_name())
}

/// Each profile's steps that observe (indexes into its outcomes, one snapshot item each) whose
/// snapshot form differs from what `dir/{name}.snap` holds; every one of a profile whose number
/// of items changed or that the file lacks, and of every profile without the file.
pub fn differing_steps(dir: &Path, name: &str, run: &ScenarioRun) -> BTreeMap<String, Vec<usize>> {
    let stored = stored(&dir.join(format!("{name}.snap"))).unwrap_or_default();
    let (was, now) = (steps_by_profile(&stored), steps_by_profile(&yaml(run)));
    now.into_iter()
        .map(|(profile, steps)| {
            let before = was.get(&profile).filter(|b| b.len() == steps.len());
            let differ = steps
                .iter()
                .enumerate()
                .filter(|(i, step)| before.and_then(|b| b.get(*i)) != Some(*step));
            (profile, differ.map(|(i, _)| i).collect())
        })
        .collect()
}

/// A snapshot's YAML (as insta writes it: `profiles:`, a profile per key two spaces in, a step
/// per list item four spaces in; a block string's blank lines bare) as each profile's steps,
/// each step's lines as one text.
fn steps_by_profile(yaml: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let lines = yaml.lines().skip_while(|l| *l != "profiles:").skip(1);
    let mut profile = String::new();
    for line in lines.take_while(|l| l.is_empty() || l.starts_with("  ")) {
        if let Some(key) = line.strip_prefix("  ").filter(|l| !l.starts_with(' ')) {
            profile = key
                .split_once(':')
                .map_or(key, |(name, _)| name)
                .to_string();
            out.entry(profile.clone()).or_default();
            continue;
        }
        let Some(steps) = out.get_mut(&profile) else {
            continue;
        };
        if line.starts_with("    - ") {
            steps.push(String::new());
        }
        if let Some(step) = steps.last_mut() {
            step.push_str(line);
            step.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{DeployOutcome, Outcome};
    use crate::runner::ProfileRun;
    use crate::Profile;

    /// A request step, then a deploy step whose load failed `failed` requests (each a 502).
    fn profile_run(profile: Profile, failed: u64) -> ProfileRun {
        let mut deploy = Outcome::blank("deploy".into(), "DEPLOY".into());
        deploy.deploy = Some(DeployOutcome {
            instances: 2,
            requests: 10,
            failed,
            failed_requests: (0..failed).map(|i| format!("request {i}: 502")).collect(),
            ..DeployOutcome::default()
        });
        ProfileRun {
            profile,
            nginx_version: "nginx/1.22.1".into(),
            outcomes: vec![Outcome::blank("play".into(), "GET /".into()), deploy],
            failures: Vec::new(),
            set_up: Vec::new(),
            notes: Vec::new(),
            elapsed: std::time::Duration::ZERO,
        }
    }

    fn scenario_run(fixed_failed: u64, hardened_failed: u64) -> ScenarioRun {
        ScenarioRun {
            name: "deploy-differs".into(),
            backend: "reference".into(),
            description: "d".into(),
            nginx_version: "nginx/1.22.1".into(),
            runs: vec![
                profile_run(Profile::Fixed, fixed_failed),
                profile_run(Profile::Hardened, hardened_failed),
            ],
        }
    }

    fn steps(pairs: &[(&str, &[usize])]) -> BTreeMap<String, Vec<usize>> {
        pairs
            .iter()
            .map(|(p, s)| (p.to_string(), s.to_vec()))
            .collect()
    }

    #[test]
    fn a_snapshots_steps_are_read_per_profile_blank_lines_of_a_block_string_included() {
        let yaml = "description: d\nprofiles:\n  fixed:\n    - step: a\n      body: |+\n        x\n\n\n    - step: b\n  legacy: []\n  stock:\n    - step: c\n";
        let steps = steps_by_profile(yaml);
        assert_eq!(
            steps["fixed"],
            [
                "    - step: a\n      body: |+\n        x\n\n\n",
                "    - step: b\n"
            ]
        );
        assert!(steps["legacy"].is_empty());
        assert_eq!(steps["stock"], ["    - step: c\n"]);
    }

    #[test]
    fn only_the_failed_requests_of_a_deploy_step_that_differs_are_listed_once() {
        let dir = tempfile::tempdir().unwrap();
        let name = "deploy-differs";
        // No snapshot: every step of every profile differs.
        let before = scenario_run(1, 0);
        let all = differing_steps(dir.path(), name, &before);
        assert_eq!(all, steps(&[("fixed", &[0, 1]), ("hardened", &[0, 1])]));
        // The snapshot: fixed's deploy failed some, hardened's none.
        let pending = write_pending(dir.path(), name, &before).unwrap();
        std::fs::rename(pending, dir.path().join(format!("{name}.snap"))).unwrap();
        assert_eq!(
            differing_steps(dir.path(), name, &before),
            steps(&[("fixed", &[]), ("hardened", &[])])
        );
        // Now hardened's failed too: only its deploy step differs, and only its requests show
        // (fixed's expected failure is no news).
        let after = scenario_run(1, 2);
        let differing = differing_steps(dir.path(), name, &after);
        assert_eq!(differing, steps(&[("fixed", &[]), ("hardened", &[1])]));
        assert_eq!(
            after.deploy_failures(&differing),
            [
                "[hardened] deploy: request 0: 502",
                "[hardened] deploy: request 1: 502"
            ]
        );
        // A step fewer than the snapshot holds: every one of that profile differs.
        let mut shorter = before.clone();
        shorter.runs[0].outcomes.pop();
        assert_eq!(
            differing_steps(dir.path(), name, &shorter),
            steps(&[("fixed", &[0]), ("hardened", &[])])
        );
        // Where a failed `failed` expectation lists them already, they are not listed again.
        let mut expected = after.clone();
        let expect = crate::expect::Expect {
            failed: Some(0),
            ..Default::default()
        };
        let hardened = &mut expected.runs[1];
        hardened.failures = expect.failures(&hardened.outcomes[1]);
        assert_eq!(hardened.failures.len(), 1, "{:?}", hardened.failures);
        assert!(expected.deploy_failures(&differing).is_empty());
        // The table's rows: each says the snapshot differs, and where its own steps do not.
        let mismatch = Mismatch {
            message: "snapshot differs".into(),
            steps: differing,
        };
        let rows = crate::summary::rows(&after, Some(&mismatch));
        assert_eq!(
            rows[0].failures,
            ["snapshot differs; this profile's steps match it"]
        );
        assert_eq!(
            rows[1].failures,
            [
                "snapshot differs",
                "deploy: request 0: 502",
                "deploy: request 1: 502"
            ]
        );
    }
}
