//! The harness library's errors: each names what failed and carries what explains it.

use std::time::Duration;

/// Everything that can go wrong bringing up or driving a stack.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A program the harness needs is not installed.
    #[error("{tool} not found: {hint}")]
    ToolMissing {
        /// `nginx`, `docker`, `chromium`, ...
        tool: &'static str,
        /// How to install it.
        hint: String,
    },
    /// The Docker engine is configured but does not answer.
    #[error("the Docker engine at {address} {problem}")]
    EngineUnreachable {
        /// Where it was looked for: `DOCKER_HOST=…`, or the local socket.
        address: String,
        /// What went wrong, and what to do.
        problem: String,
    },
    /// No `harness.toml` in the working directory or any parent.
    #[error("no harness.toml in {} or any folder above it: run `harness init` to make this folder a project, or cd into one (or set HARNESS_PROJECT to its root)", from.display())]
    NoProject {
        /// Where the search started.
        from: std::path::PathBuf,
    },
    /// A config file the harness renders lacks something it needs.
    #[error("{file}{}: {message}", if *line > 0 { format!(":{line}") } else { String::new() })]
    Config {
        /// The file.
        file: String,
        /// 1-based line, 0 when the whole file is at fault.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A component did not become ready in time.
    #[error("{component} not ready at {url} after {waited:?}\n{logs}")]
    NotReady {
        /// `nginx`, `backend`, ...
        component: String,
        /// What was probed.
        url: String,
        /// How long the harness waited.
        waited: Duration,
        /// The tail of every component's log.
        logs: String,
    },
    /// A component exited while it should have been running.
    #[error("{component} exited ({status}) during start-up\n{logs}")]
    Exited {
        /// The component.
        component: String,
        /// Its exit status.
        status: String,
        /// The tail of every component's log.
        logs: String,
    },
    /// A scenario or stack file is invalid.
    #[error("{file}:{line}:{column}: {field}: {message}{}", hint.as_ref().map(|h| format!("\n  hint: {h}")).unwrap_or_default())]
    Scenario {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The field at fault (`steps[2].fault.kind`).
        field: String,
        /// What is wrong.
        message: String,
        /// How to fix it.
        hint: Option<String>,
    },
    /// A scenario built in Rust is invalid (a file's errors are [`HarnessError::Scenario`]).
    #[error("scenario {scenario}: {field}: {message}")]
    InvalidScenario {
        /// The scenario's name.
        scenario: String,
        /// The field at fault.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A recording or fault rule was refused by mock-twilio.
    #[error(transparent)]
    Invalid(#[from] mock_twilio::InvalidField),
    /// A step could not be carried out (it names what it needed).
    #[error("step {step}: {message}")]
    Step {
        /// The step's index.
        step: usize,
        /// What went wrong.
        message: String,
    },
    /// Something awaited did not happen in time (a log line, a file, a settled log).
    #[error("{what}: not within {waited:?}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long the harness waited.
        waited: Duration,
    },
    /// The Docker engine refused or failed a request.
    #[error("docker: {what}: {message}")]
    Docker {
        /// What was asked (`create network harness-x`).
        what: String,
        /// The engine's answer.
        message: String,
    },
    /// A command the harness ran (debootstrap, docker build) failed.
    #[error("{what} failed ({status}):\n{output}")]
    Command {
        /// What it was for.
        what: String,
        /// Its exit status.
        status: String,
        /// The tail of its output.
        output: String,
    },
    /// The browser (WebDriver, the page) failed.
    #[error("browser: {what}: {message}")]
    Browser {
        /// What was being done.
        what: String,
        /// The driver's or page's answer.
        message: String,
    },
    /// A stack failed while a scenario ran; `logs` has every component's log tail.
    #[error("{source}\n{logs}")]
    Stack {
        /// What failed.
        source: Box<HarnessError>,
        /// The tail of every component's log.
        logs: String,
    },
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the file or address.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl HarnessError {
    /// Maps an I/O error, naming what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
        let what = what.into();
        move |source| HarnessError::Io { what, source }
    }

    /// A step's error.
    pub fn step(step: usize, message: impl Into<String>) -> HarnessError {
        HarnessError::Step {
            step,
            message: message.into(),
        }
    }
}
