//! `spawn_app()`: radsight on port 0 with a fresh database (a temporary SQLite file, or a new
//! PostgreSQL database on the local server), two registered clients with real generated keys,
//! and a FHIR server fixture standing in for the EHR.

use jsonwebtoken::Algorithm;
use radsight::configuration::{ClientSettings, Settings};
use radsight::keys::ClientKey;
use radsight::startup::Application;
use radsight::store::entities::{analysis_result, audit_entry, feedback};
use reqwest::StatusCode;
use sea_orm::{ActiveValue::Set, ConnectionTrait, Database, DatabaseConnection, EntityTrait, QueryOrder};
use serde_json::{Value, json};

use crate::fhir_fixture::FhirFixture;

pub const ISS: &str = "https://ehr.example.org";
pub const JKU_ISS: &str = "https://jku-client.example.org";
pub const AUDITOR_ISS: &str = "https://compliance.example.org";
pub const PATIENT: &str = "example-patient";
/// The patient namespace the test EHR (its CDS clients and SMART EHRs) and the RIS's HL7
/// assigning authority `HOSP` share: the same patient ids.
pub const TEST_NAMESPACE: &str = "test-hospital";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub address: String,
    /// The HL7 MLLP listener's port.
    pub hl7_port: u16,
    pub db: DatabaseConnection,
    pub db_url: String,
    pub es384: ClientKey,
    pub rs384: ClientKey,
    /// The key of the client registered only through a `jku`.
    pub jku_key: ClientKey,
    /// The key of the registered auditor client.
    pub auditor: ClientKey,
    /// The settings the app was started with (paths of the checkpoint key and directory).
    pub settings: Settings,
    pub fhir: FhirFixture,
    pub http: reqwest::Client,
    /// Stops the instance as SIGTERM would.
    pub stop: radsight::startup::ShutdownTrigger,
    running: std::sync::Mutex<Option<tokio::task::JoinHandle<std::io::Result<()>>>>,
    _tmp: tempfile::TempDir,
}

fn pg_admin_url() -> String {
    std::env::var("RADSIGHT_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub async fn fresh_database(backend: Backend, tmp: &tempfile::TempDir) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite://{}/radsight.db?mode=rwc", tmp.path().display()),
        Backend::Postgres => {
            let admin = pg_admin_url();
            let name = format!("radsight_test_{}", uuid::Uuid::new_v4().simple());
            let conn = Database::connect(&admin).await.expect("PostgreSQL must be running (the test command starts it)");
            conn.execute_unprepared(&format!("CREATE DATABASE {name}")).await.expect("create test database");
            let base = admin.rsplit_once('/').expect("a database URL has a path").0;
            format!("{base}/{name}")
        }
    }
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

pub async fn spawn_app_with(backend: Backend, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let tmp = tempfile::tempdir().expect("temp dir");
    let fhir = FhirFixture::start().await;
    let es384 = ClientKey::generate(Algorithm::ES384).unwrap();
    let rs384 = ClientKey::generate(Algorithm::RS384).unwrap();
    let jku_key = ClientKey::generate(Algorithm::ES384).unwrap();
    fhir.set_jwks(serde_json::to_value(jku_key.jwks()).unwrap());
    let auditor = ClientKey::generate(Algorithm::ES384).unwrap();
    let jwks = json!({"keys": [es384.public_jwk(), rs384.public_jwk()]});

    let mut settings = Settings::default();
    settings.server.port = 0;
    settings.server.workers = 2;
    settings.database.url = fresh_database(backend, &tmp).await;
    settings.database.max_connections = 5;
    settings.hl7.bind = "127.0.0.1:0".into();
    // Fast, small queue settings so retry and lease behaviour is observable in a test.
    settings.jobs.workers = 1;
    settings.jobs.poll_interval_ms = 100;
    settings.jobs.backoff_base_ms = 50;
    settings.jobs.backoff_max_ms = 200;
    settings.jobs.max_attempts = 3;
    settings.dicomweb.timeout_ms = 2000;
    settings.analysis.models_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/models").into();
    settings.clients = vec![
        ClientSettings {
            iss: ISS.into(),
            jwks: Some(jwks.to_string()),
            jwks_file: None,
            jku: vec![],
            fhir_servers: vec![fhir.fhir_base()],
        },
        ClientSettings { iss: JKU_ISS.into(), jwks: None, jwks_file: None, jku: vec![fhir.jwks_url()], fhir_servers: vec![] },
    ];
    settings.auditors = vec![ClientSettings {
        iss: AUDITOR_ISS.into(),
        jwks: Some(serde_json::to_string(&auditor.jwks()).unwrap()),
        jwks_file: None,
        jku: vec![],
        fhir_servers: vec![],
    }];
    settings.audit.checkpoint_key_file = tmp.path().join("audit-checkpoint.pem");
    settings.audit.checkpoint_dir = tmp.path().join("checkpoints");
    settings.audit.checkpoint_interval_secs = 0;
    // radsight's own keyring (SMART Backend Services), never the working directory's.
    settings.outputs.keys_dir = tmp.path().join("keys");
    settings.patient_namespaces = vec![radsight::configuration::PatientNamespaceSettings {
        name: TEST_NAMESPACE.into(),
        issuers: vec![ISS.into(), JKU_ISS.into()],
        hl7_authorities: vec!["HOSP".into()],
    }];
    configure(&mut settings);
    let db_url = settings.database.url.clone();
    let app = Application::build(settings.clone()).await.expect("radsight starts");
    let address = format!("http://127.0.0.1:{}", app.port());
    let hl7_port = app.hl7_port().expect("the HL7 listener is enabled in tests");
    let stop = app.shutdown_trigger();
    let running = std::sync::Mutex::new(Some(tokio::spawn(app.run_until_stopped())));
    let db = Database::connect(&db_url).await.unwrap();
    TestApp {
        address,
        hl7_port,
        db,
        db_url,
        es384,
        rs384,
        jku_key,
        auditor,
        settings,
        fhir,
        http: reqwest::Client::new(),
        stop,
        running,
        _tmp: tmp,
    }
}

pub struct CliOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// A parsed response.
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// Asserts an OperationOutcome with `status` and returns its first issue.
    pub fn outcome(&self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text);
        let body = self.json();
        assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
        body["issue"][0].clone()
    }

    pub fn cards(&self) -> Vec<Value> {
        assert_eq!(self.status, StatusCode::OK, "body: {}", self.text);
        self.json()["cards"].as_array().expect("cards array").clone()
    }
}

impl TestApp {
    /// Stops the instance as SIGTERM would and waits until it has drained.
    pub async fn shut_down(&self) {
        self.stop.trigger();
        let running = self.running.lock().unwrap().take().expect("the instance is running");
        running.await.expect("the server task ends").expect("the server stops cleanly");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// Runs the `radsight` CLI against this app's database and audit settings.
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_radsight"))
            .args(args)
            .env("DATABASE_URL", &self.db_url)
            .env("RADSIGHT_AUDIT__CHECKPOINT_KEY_FILE", &self.settings.audit.checkpoint_key_file)
            .env("RADSIGHT_AUDIT__CHECKPOINT_DIR", &self.settings.audit.checkpoint_dir)
            .env("RADSIGHT_ANALYSIS__MODELS_DIR", &self.settings.analysis.models_dir)
            .env("RADSIGHT_OUTPUTS__KEYS_DIR", &self.settings.outputs.keys_dir)
            .env_remove("RADSIGHT_CONFIG")
            .current_dir(self._tmp.path())
            .output()
            .unwrap();
        CliOutput {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// A GET as the registered auditor with the `audit.read` scope.
    pub async fn auditor_get(&self, path_and_query: &str) -> Reply {
        let path = path_and_query.split('?').next().unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = json!({"iss": AUDITOR_ISS, "aud": self.url(path), "iat": now, "exp": now + 300,
            "jti": uuid::Uuid::new_v4().to_string(), "scope": "audit.read"});
        let token = self.auditor.sign(&claims, None).unwrap();
        self.send(reqwest::Method::GET, path_and_query, Some(&token), None).await
    }

    pub fn token(&self, path: &str) -> String {
        self.es384.client_token(ISS, &self.url(path)).unwrap()
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, token: Option<&str>, body: Option<Vec<u8>>) -> Reply {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.expect("request sent");
        Reply { status: resp.status(), headers: resp.headers().clone(), text: resp.text().await.unwrap() }
    }

    /// POSTs JSON with a fresh, valid ES384 token.
    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        let token = self.token(path);
        self.send(reqwest::Method::POST, path, Some(&token), Some(body.to_string().into_bytes())).await
    }

    pub async fn hook(&self, service: &str, body: &Value) -> Reply {
        self.post(&format!("/cds-services/{service}"), body).await
    }

    pub async fn discovery(&self, token: Option<&str>) -> Reply {
        self.send(reqwest::Method::GET, "/cds-services", token, None).await
    }

    pub async fn audit(&self) -> Vec<audit_entry::Model> {
        audit_entry::Entity::find().order_by_asc(audit_entry::Column::Seq).all(&self.db).await.unwrap()
    }

    /// Every card served, as the service reads them back (a call's cards from its one row).
    pub async fn cards(&self) -> Vec<radsight::store::served_cards::ServedCard> {
        radsight::store::served_cards::all(&self.db).await.unwrap()
    }

    pub async fn jobs(&self) -> Vec<radsight::store::entities::job::Model> {
        use radsight::store::entities::job;
        job::Entity::find().order_by_asc(job::Column::CreatedAt).all(&self.db).await.unwrap()
    }

    /// Audit entries with this action.
    pub async fn audit_of(&self, action: &str) -> Vec<audit_entry::Model> {
        self.audit().await.into_iter().filter(|e| e.action == action).collect()
    }

    /// Waits (up to [`PATIENCE`]) until `check` holds for the jobs table.
    pub async fn wait_for_jobs(
        &self,
        what: &str,
        check: impl Fn(&[radsight::store::entities::job::Model]) -> bool,
    ) -> Vec<radsight::store::entities::job::Model> {
        self.wait_for_jobs_within(PATIENCE, what, check).await
    }

    /// [`TestApp::wait_for_jobs`] with another bound, for work that is slow by nature (a 224²
    /// network's analysis takes tens of seconds in the dev profile on a loaded machine).
    pub async fn wait_for_jobs_within(
        &self,
        patience: std::time::Duration,
        what: &str,
        check: impl Fn(&[radsight::store::entities::job::Model]) -> bool,
    ) -> Vec<radsight::store::entities::job::Model> {
        let deadline = std::time::Instant::now() + patience;
        loop {
            let jobs = self.jobs().await;
            if check(&jobs) {
                return jobs;
            }
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}; jobs: {jobs:#?}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    pub async fn feedback_rows(&self) -> Vec<feedback::Model> {
        feedback::Entity::find().all(&self.db).await.unwrap()
    }

    /// Stores a study for the example patient, `days_ago` days old, with an optional result.
    pub async fn seed_study(
        &self,
        uid: &str,
        modality: &str,
        body_site: &str,
        days_ago: i64,
        result: Option<(&str, Value)>,
    ) -> Option<String> {
        use radsight::store::entities::study;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        study::Entity::insert(study::ActiveModel {
            study_uid: Set(uid.into()),
            patient_ref: Set(format!("Patient/{PATIENT}")),
            patient_namespace: Set(Some(TEST_NAMESPACE.into())),
            accession: Set(None),
            modality: Set(modality.into()),
            body_site: Set(Some(body_site.into())),
            procedure_code: Set(None),
            description: Set(None),
            started_at: Set(Some(now - days_ago * 86_400)),
            created_at: Set(now),
        })
        .exec_without_returning(&self.db)
        .await
        .unwrap();
        let (status, findings) = result?;
        let id = uuid::Uuid::new_v4().to_string();
        analysis_result::Entity::insert(analysis_result::ActiveModel {
            id: Set(id.clone()),
            study_uid: Set(uid.into()),
            status: Set(status.into()),
            model_id: Set(Some("radsight-cxr-demo".into())),
            model_version: Set(Some("0.1.0".into())),
            weights_sha256: Set(Some("ab".repeat(32))),
            findings: Set(findings.to_string()),
            error: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        })
        .exec_without_returning(&self.db)
        .await
        .unwrap();
        Some(id)
    }
}

/// The day the example requests were written; their clinical dates are relative to it.
const EXAMPLES_WRITTEN: time::Date = time::macros::date!(2026 - 11 - 29);

/// The shipped example request for `hook` (order-select, order-sign, patient-view), with every
/// clinical date moved forward by the days since the examples were written, so that "an eGFR
/// 4 days ago" stays 4 days ago whenever the tests run.
pub fn example(hook: &str) -> Value {
    let path = format!("{}/cds-hooks/examples/{hook}.json", env!("CARGO_MANIFEST_DIR"));
    let mut value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let shift = time::OffsetDateTime::now_utc().date() - EXAMPLES_WRITTEN;
    shift_dates(&mut value, shift);
    value
}

fn shift_dates(value: &mut Value, shift: time::Duration) {
    use time::format_description::well_known::Rfc3339;
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                let dated = matches!(key.as_str(), "authoredOn" | "effectiveDateTime" | "started" | "issued");
                match v.as_str().map(|s| time::OffsetDateTime::parse(s, &Rfc3339)) {
                    Some(Ok(t)) if dated => *v = Value::String((t + shift).format(&Rfc3339).unwrap()),
                    _ => shift_dates(v, shift),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| shift_dates(v, shift)),
        _ => {}
    }
}

/// The summary's rule or model ids of the cards, from `source.topic.code`.
pub fn topics(cards: &[Value]) -> Vec<String> {
    let mut t: Vec<String> = cards.iter().filter_map(|c| c["source"]["topic"]["code"].as_str().map(str::to_owned)).collect();
    t.sort();
    t
}

/// Generates a `#[tokio::test]` per backend for each listed `async fn(Backend)`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name($crate::helpers::Backend::Sqlite).await }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name($crate::helpers::Backend::Postgres).await }
            )*
        }
    };
}

/// How long a test waits for the service to do something it must do. Generous, because the
/// suite shares two cores with Orthanc, PostgreSQL and Chromium: a test checks what happens,
/// never how fast.
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// A loopback port where nobody listens, for as long as the test process lives: a socket holds
/// it bound but never listens, so a connection is refused at once and no other test's listener
/// can be given the port (a port merely free a moment ago may be handed to the next `bind`).
pub fn closed_port() -> u16 {
    static HELD: std::sync::Mutex<Vec<tokio::net::TcpSocket>> = std::sync::Mutex::new(Vec::new());
    let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
    socket.bind("127.0.0.1:0".parse().unwrap()).expect("bind a loopback port");
    let port = socket.local_addr().unwrap().port();
    HELD.lock().unwrap().push(socket);
    port
}

/// Runs a script of `tests/python` with the test venv's Python, `input` on stdin; (success, output).
pub fn run_python(script: &str, input: &str) -> (bool, String) {
    let path = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(python())
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (scripts/test.sh provides the venv)");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// The test venv's Python (scripts/test.sh exports it), else `python3`.
pub fn python() -> String {
    std::env::var("RADSIGHT_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// A `radsight serve` process, killed when dropped so that a failing test leaves none behind.
pub struct ServeProcess(std::process::Child);

impl ServeProcess {
    /// SIGKILL: no shutdown, no flushing.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// SIGTERM, then waits up to `within` for the process to exit; its exit status, or `None`
    /// when it is still running.
    pub fn terminate(&mut self, within: std::time::Duration) -> Option<std::process::ExitStatus> {
        let sent = std::process::Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status().unwrap();
        assert!(sent.success(), "kill -TERM");
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.0.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        None
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `radsight serve` as its own process, set up by `configure` (environment, `--config`); returns
/// it with its HL7 port once it is serving. It runs in a temporary directory and logs JSON.
/// `settings` as the configuration file of `radsight serve` processes of their own, kept while
/// this value lives.
pub struct ServeConfig(tempfile::NamedTempFile);

impl ServeConfig {
    pub fn write(settings: &Settings) -> ServeConfig {
        let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        std::fs::write(file.path(), toml::to_string(settings).unwrap()).unwrap();
        ServeConfig(file)
    }

    /// Starts a process with this configuration: it and its HL7 port.
    pub fn start(&self) -> (ServeProcess, u16) {
        let (process, _, hl7_port) = self.start_with_ports();
        (process, hl7_port)
    }

    /// Starts a process with this configuration: it, its HTTP port and its HL7 port.
    pub fn start_with_ports(&self) -> (ServeProcess, u16, u16) {
        serve_process_ports(|c| {
            c.arg("--config").arg(self.0.path());
        })
    }
}

pub fn serve_process(configure: impl FnOnce(&mut std::process::Command)) -> (ServeProcess, u16) {
    let (process, _, hl7_port) = serve_process_ports(configure);
    (process, hl7_port)
}

/// [`serve_process`], returning the process with its HTTP port and its HL7 port.
pub fn serve_process_ports(configure: impl FnOnce(&mut std::process::Command)) -> (ServeProcess, u16, u16) {
    use std::io::BufRead;
    let cwd = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_radsight"));
    command.env("RADSIGHT_LOG_FORMAT", "json").env_remove("RADSIGHT_CONFIG").current_dir(cwd.path()).stderr(std::process::Stdio::piped());
    configure(&mut command);
    let child = command.arg("serve").spawn().unwrap();
    let mut child = ServeProcess(child);
    let mut lines = std::io::BufReader::new(child.0.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Ok(v) = serde_json::from_str::<Value>(&line)
            && v["fields"]["message"] == "radsight is serving"
        {
            // Keep draining the log so that the process never writes into a closed pipe.
            std::thread::spawn(move || lines.for_each(|l| eprintln!("radsight serve: {}", l.unwrap_or_default())));
            let port = |name: &str| v["fields"][name].as_u64().unwrap_or_else(|| panic!("the {name} is logged")) as u16;
            return (child, port("port"), port("hl7_port"));
        }
        eprintln!("radsight serve: {line}");
    }
    panic!("radsight serve exited before serving");
}

/// A temporary model registry holding a copy of the shipped model.
pub fn registry_with_shipped_model() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let from = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/models/radsight-phantom-cxr"));
    let to = dir.path().join("radsight-phantom-cxr");
    std::fs::create_dir(&to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    dir
}

/// `radsight models import WEIGHTS DESCRIPTION` into `registry`, as a site would run it;
/// asserts it succeeded and returns what it printed.
pub fn import_model(registry: &std::path::Path, weights: &std::path::Path, description: &std::path::Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_radsight"))
        .args(["models", "import", weights.to_str().unwrap(), description.to_str().unwrap()])
        .env("RADSIGHT_ANALYSIS__MODELS_DIR", registry)
        .env_remove("RADSIGHT_CONFIG")
        .current_dir(registry)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}
