//! `radsight serve` (the service, after migrating the database) and `radsight migrate`.

use std::path::Path;
use std::process::ExitCode;

use crate::configuration::Settings;
use crate::startup::Application;
use crate::telemetry;

/// Runs the service until it is stopped.
pub(super) async fn serve(config: Option<&Path>) -> anyhow::Result<ExitCode> {
    telemetry::init();
    let settings = Settings::load(config)?;
    let app = Application::build(settings).await?;
    tracing::info!(port = app.port(), hl7_port = app.hl7_port(), "radsight is serving");
    app.run_until_stopped().await?;
    Ok(ExitCode::SUCCESS)
}

/// Applies the database migrations and exits.
pub(super) async fn migrate(config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(config)?;
    super::migrated_db(&settings).await?;
    println!("migrations applied");
    Ok(ExitCode::SUCCESS)
}
