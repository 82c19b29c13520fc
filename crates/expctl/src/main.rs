//! `expctl`: the command line for ops on `expd`'s admin and results RPCs.
//!
//! # Layout
//!
//! - `main` (this file): the commands and their calls.
//! - [`exp_proto::file`]: experiment files (YAML or JSON, the protobuf
//!   JSON mapping) and YAML output, shared with the console's YAML pane.
//! - [`table`]: `GetResults` as a readable table.
//! - [`holdouts`]: `expctl holdout ...`, the holdout commands.
//! - [`demo`]: `expctl demo`, the whole product in a minute on a private,
//!   in-process `expd`.
//!
//! Every command talks to `--addr` (default `http://127.0.0.1:50051`) and
//! sends `--token` (or `EXPCTL_TOKEN`) as `authorization: Bearer <token>`.
//! A refused call prints the server's message and every offending field,
//! and exits with status 1.

mod demo;
mod holdouts;
mod table;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};
use exp_proto::file;
use exp_proto::v1::{
    self, admin_service_client::AdminServiceClient, results_service_client::ResultsServiceClient,
};
use tonic::{Request, transport::Channel};

/// Command line for the experiment service.
#[derive(Debug, Parser)]
#[command(name = "expctl", version, about)]
struct Cli {
    /// gRPC address of expd.
    #[arg(
        long,
        env = "EXPCTL_ADDR",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    addr: String,

    /// Bearer token for the admin RPCs (needed when expd runs with
    /// --tokens-file).
    #[arg(long, env = "EXPCTL_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create an experiment from a YAML or JSON file.
    Create {
        /// The experiment file.
        #[arg(short, long)]
        file: PathBuf,
        /// Why, recorded in the revision.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Replace an experiment's editable fields with a file's. The file's
    /// `revision` is the one the edit is based on, so an edit of a stale
    /// copy is refused; `--force` applies a file without one over the
    /// current revision.
    Update {
        /// The experiment file.
        #[arg(short, long)]
        file: PathBuf,
        /// Apply a file without `revision` over whatever is current.
        #[arg(long)]
        force: bool,
        /// Why, recorded in the revision.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// List experiments.
    List {
        /// Only this status.
        #[arg(long, value_enum)]
        status: Option<StatusArg>,
        /// Only experiments on this placement.
        #[arg(long, default_value = "")]
        placement: String,
        /// Only this owner's.
        #[arg(long, default_value = "")]
        owner: String,
    },
    /// Print an experiment as YAML.
    Show {
        /// Experiment id.
        id: String,
    },
    /// Start a draft experiment.
    Start {
        /// Experiment id.
        id: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Pause a running experiment.
    Pause {
        /// Experiment id.
        id: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Resume a paused experiment.
    Resume {
        /// Experiment id.
        id: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Stop an experiment, optionally shipping one variant to everyone.
    Stop {
        /// Experiment id.
        id: String,
        /// Why (required).
        #[arg(long)]
        reason: String,
        /// Variant to give every eligible unit from now on.
        #[arg(long, default_value = "")]
        ship: String,
    },
    /// Archive a stopped or draft experiment.
    Archive {
        /// Experiment id.
        id: String,
    },
    /// Set the share of eligible units that enter (0-100); units already
    /// in keep their variant.
    Ramp {
        /// Experiment id.
        id: String,
        /// New traffic percent.
        percent: u32,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// List an experiment's revisions, newest first.
    Revisions {
        /// Experiment id.
        id: String,
    },
    /// Restore an earlier revision's configuration as a new revision.
    Rollback {
        /// Experiment id.
        id: String,
        /// The revision to restore.
        to_revision: u64,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// QA overrides: force a unit into a variant.
    Override {
        #[command(subcommand)]
        command: OverrideCommand,
    },
    /// Holdouts: keep a share of units out of whole layers or placements.
    Holdout {
        #[command(subcommand)]
        command: holdouts::HoldoutCommand,
    },
    /// Print an experiment's results table.
    Results {
        /// Experiment id.
        id: String,
        /// Significance level (0 < alpha <= 0.5).
        #[arg(long, default_value_t = 0.05, value_parser = parse_alpha)]
        alpha: f64,
        /// Wait until the results include the events logged up to this log
        /// position (from a LogExposures or LogOutcomes answer).
        #[arg(long, default_value_t = 0)]
        position: u64,
        /// Print the results over time instead: the cumulative primary
        /// metric at every hour or day end, and now.
        #[arg(long, value_enum)]
        timeline: Option<GranularityArg>,
    },
    /// How many units and days an experiment needs to find a change of
    /// a given size, before launch (PlanExperiment).
    Plan {
        /// The metric's rate in control today (a proportion), e.g. 0.1.
        #[arg(long, conflicts_with_all = ["mean", "variance"], required_unless_present = "mean")]
        rate: Option<f64>,
        /// The metric's mean in control today (with --variance).
        #[arg(long, requires = "variance")]
        mean: Option<f64>,
        /// The variance of one unit's value (with --mean).
        #[arg(long, requires = "mean")]
        variance: Option<f64>,
        /// The smallest relative change worth finding: 0.05 for 5%.
        #[arg(long)]
        mde: f64,
        /// Significance level.
        #[arg(long, default_value_t = 0.05)]
        alpha: f64,
        /// Power wanted.
        #[arg(long, default_value_t = 0.8)]
        power: f64,
        /// Variant weights, control first, e.g. 50,50 (default 50/50, or
        /// the experiment's).
        #[arg(long, value_delimiter = ',')]
        weights: Vec<u32>,
        /// Percent of eligible units in the experiment (default 100, or the
        /// experiment's).
        #[arg(long, default_value_t = 0)]
        traffic: u32,
        /// Eligible units a day, to print the days needed.
        #[arg(long, default_value_t = 0.0)]
        daily_units: f64,
        /// Before launch, without --daily-units: the days from the units
        /// exposed on this placement over the last 24 hours, in any
        /// experiment.
        #[arg(long)]
        placement: Option<String>,
        /// A started experiment: also where it stands (its units, the
        /// change they detect now, the units a day it saw, the days left);
        /// its weights and traffic are used unless given.
        #[arg(long)]
        experiment: Option<String>,
    },
    /// Start a private expd, run two experiments on simulated traffic and
    /// show their results and a guardrail stopping the harmful one.
    Demo(demo::DemoArgs),
}

#[derive(Debug, Subcommand)]
enum OverrideCommand {
    /// Force `unit` into `variant`.
    Set {
        /// Experiment id.
        id: String,
        /// Whether the unit is a user or a session id.
        #[arg(long, value_enum, default_value = "user")]
        unit_type: UnitTypeArg,
        /// The user or session id.
        #[arg(long)]
        unit: String,
        /// The variant.
        #[arg(long)]
        variant: String,
        /// Lifetime, e.g. 2h; none means until deleted.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<Duration>,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Remove an override.
    Delete {
        /// Experiment id.
        id: String,
        /// Whether the unit is a user or a session id.
        #[arg(long, value_enum, default_value = "user")]
        unit_type: UnitTypeArg,
        /// The user or session id.
        #[arg(long)]
        unit: String,
    },
    /// List an experiment's overrides.
    List {
        /// Experiment id.
        id: String,
    },
}

fn parse_alpha(text: &str) -> Result<f64, String> {
    let alpha: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if alpha > 0.0 && alpha <= 0.5 {
        Ok(alpha)
    } else {
        Err(format!("{alpha} is not above 0 and at most 0.5"))
    }
}

/// Spacing of a results timeline.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum GranularityArg {
    /// Every UTC hour.
    Hour,
    /// Every UTC day.
    Day,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StatusArg {
    Draft,
    Scheduled,
    Running,
    Paused,
    Stopped,
    Completed,
    Archived,
}

impl StatusArg {
    fn to_proto(self) -> v1::ExperimentStatus {
        match self {
            Self::Draft => v1::ExperimentStatus::Draft,
            Self::Scheduled => v1::ExperimentStatus::Scheduled,
            Self::Running => v1::ExperimentStatus::Running,
            Self::Paused => v1::ExperimentStatus::Paused,
            Self::Stopped => v1::ExperimentStatus::Stopped,
            Self::Completed => v1::ExperimentStatus::Completed,
            Self::Archived => v1::ExperimentStatus::Archived,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum UnitTypeArg {
    User,
    Session,
}

impl UnitTypeArg {
    fn to_proto(self) -> i32 {
        match self {
            Self::User => v1::UnitType::User as i32,
            Self::Session => v1::UnitType::Session as i32,
        }
    }
}

/// A failed command: what to print.
#[derive(Debug)]
struct Failure(String);

impl From<tonic::Status> for Failure {
    fn from(status: tonic::Status) -> Self {
        use tonic_types::StatusExt;
        let mut message = format!("{:?}: {}", status.code(), status.message());
        if let Some(bad) = status.get_details_bad_request() {
            for violation in bad.field_violations {
                message.push_str(&format!(
                    "\n  {}: {}",
                    violation.field, violation.description
                ));
            }
        }
        Self(message)
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Self(message)
    }
}

/// The clients of one `expd`, sending the token with every call.
struct Remote {
    admin: AdminServiceClient<Channel>,
    results: ResultsServiceClient<Channel>,
    authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl Remote {
    async fn connect(addr: &str, token: Option<String>) -> Result<Self, Failure> {
        let authorization = token
            .map(|token| {
                format!("Bearer {token}").parse().map_err(|_| {
                    "--token: must be printable ASCII without spaces or control characters"
                        .to_owned()
                })
            })
            .transpose()?;
        let channel = Channel::from_shared(addr.to_owned())
            .map_err(|error| format!("--addr {addr}: {error}"))?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|error| format!("cannot reach expd at {addr}: {error}"))?;
        Ok(Self {
            admin: AdminServiceClient::new(channel.clone()),
            results: ResultsServiceClient::new(channel),
            authorization,
        })
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        request
    }

    async fn get(&mut self, id: &str) -> Result<v1::Experiment, Failure> {
        let request = self.request(v1::GetExperimentRequest { id: id.into() });
        Ok(self
            .admin
            .get_experiment(request)
            .await?
            .into_inner()
            .experiment
            .unwrap_or_default())
    }
}

/// An enum value's proto name without its prefix, lower case:
/// `EXPERIMENT_STATUS_RUNNING` -> `running`.
fn enum_name(name: Option<&str>, prefix: &str) -> String {
    name.map(|name| name.trim_start_matches(prefix).to_lowercase())
        .unwrap_or_default()
}

/// `running`, `paused`, ... for a status number.
fn status_name(status: i32) -> String {
    enum_name(
        v1::ExperimentStatus::try_from(status)
            .ok()
            .map(|status| status.as_str_name()),
        "EXPERIMENT_STATUS_",
    )
}

fn summary(experiment: &v1::Experiment) -> String {
    let status = status_name(experiment.status);
    format!(
        "{} revision {}: {status}, traffic {}%",
        experiment.id, experiment.revision, experiment.traffic_percent
    )
}

async fn run(cli: Cli) -> Result<(), Failure> {
    if let Command::Demo(args) = cli.command {
        return demo::run(args).await.map_err(Failure);
    }
    let mut remote = Remote::connect(&cli.addr, cli.token).await?;
    match cli.command {
        Command::Demo(_) => unreachable!("handled above"),
        Command::Create { file, reason } => {
            let experiment = file::read_experiment(&file)?;
            let request = remote.request(v1::CreateExperimentRequest {
                experiment: Some(experiment),
                reason,
            });
            let created = remote.admin.create_experiment(request).await?.into_inner();
            println!(
                "created {}",
                summary(&created.experiment.unwrap_or_default())
            );
        }
        Command::Update {
            file,
            force,
            reason,
        } => {
            let mut experiment = file::read_experiment(&file)?;
            if experiment.revision == 0 {
                if !force {
                    return Err(Failure(format!(
                        "{}: no `revision`: name the revision the edit is based on (see \
                         `expctl show {}`), or pass --force to apply it over the current one",
                        file.display(),
                        experiment.id
                    )));
                }
                experiment.revision = remote.get(&experiment.id).await?.revision;
            }
            let request = remote.request(v1::UpdateExperimentRequest {
                experiment: Some(experiment),
                reason,
                ..Default::default()
            });
            let updated = remote.admin.update_experiment(request).await?.into_inner();
            println!(
                "updated {}",
                summary(&updated.experiment.unwrap_or_default())
            );
        }
        Command::List {
            status,
            placement,
            owner,
        } => {
            let mut page_token = String::new();
            println!(
                "{:<32} {:<10} {:>8} {:>8}  owner",
                "id", "status", "revision", "traffic"
            );
            loop {
                let request = remote.request(v1::ListExperimentsRequest {
                    status: status.map_or(0, |status| status.to_proto() as i32),
                    placement: placement.clone(),
                    owner: owner.clone(),
                    page_size: 100,
                    page_token,
                });
                let page = remote.admin.list_experiments(request).await?.into_inner();
                for experiment in &page.experiments {
                    let status = status_name(experiment.status);
                    println!(
                        "{:<32} {:<10} {:>8} {:>7}%  {}",
                        experiment.id,
                        status,
                        experiment.revision,
                        experiment.traffic_percent,
                        experiment.owner
                    );
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
        }
        Command::Show { id } => {
            let experiment = remote.get(&id).await?;
            print!(
                "{}",
                file::to_yaml("experiments.v1.Experiment", &experiment)
            );
        }
        Command::Start { id, reason } => {
            let request = remote.request(v1::StartExperimentRequest {
                id,
                revision: 0,
                reason,
            });
            let answer = remote.admin.start_experiment(request).await?.into_inner();
            println!(
                "started {}",
                summary(&answer.experiment.unwrap_or_default())
            );
        }
        Command::Pause { id, reason } => {
            let request = remote.request(v1::PauseExperimentRequest {
                id,
                revision: 0,
                reason,
            });
            let answer = remote.admin.pause_experiment(request).await?.into_inner();
            println!("paused {}", summary(&answer.experiment.unwrap_or_default()));
        }
        Command::Resume { id, reason } => {
            let request = remote.request(v1::ResumeExperimentRequest {
                id,
                revision: 0,
                reason,
            });
            let answer = remote.admin.resume_experiment(request).await?.into_inner();
            println!(
                "resumed {}",
                summary(&answer.experiment.unwrap_or_default())
            );
        }
        Command::Stop { id, reason, ship } => {
            let request = remote.request(v1::StopExperimentRequest {
                id,
                revision: 0,
                reason,
                ship_variant: ship,
            });
            let answer = remote.admin.stop_experiment(request).await?.into_inner();
            println!(
                "stopped {}",
                summary(&answer.experiment.unwrap_or_default())
            );
        }
        Command::Archive { id } => {
            let request = remote.request(v1::ArchiveExperimentRequest {
                id,
                ..Default::default()
            });
            let answer = remote.admin.archive_experiment(request).await?.into_inner();
            println!(
                "archived {}",
                summary(&answer.experiment.unwrap_or_default())
            );
        }
        Command::Ramp {
            id,
            percent,
            reason,
        } => {
            let mut experiment = remote.get(&id).await?;
            let from = experiment.traffic_percent;
            experiment.traffic_percent = percent;
            let request = remote.request(v1::UpdateExperimentRequest {
                experiment: Some(experiment),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["traffic_percent".into()],
                }),
                reason: if reason.is_empty() {
                    format!("ramp {from}% -> {percent}%")
                } else {
                    reason
                },
                rerandomize: false,
            });
            let answer = remote.admin.update_experiment(request).await?.into_inner();
            println!("ramped {}", summary(&answer.experiment.unwrap_or_default()));
        }
        Command::Revisions { id } => {
            let request = remote.request(v1::ListExperimentRevisionsRequest {
                id,
                ..Default::default()
            });
            let answer = remote
                .admin
                .list_experiment_revisions(request)
                .await?
                .into_inner();
            println!(
                "{:>8}  {:<10} {:<22} {:<16} reason",
                "revision", "action", "time", "author"
            );
            for revision in answer.revisions {
                let action = enum_name(
                    v1::RevisionAction::try_from(revision.action)
                        .ok()
                        .map(|action| action.as_str_name()),
                    "REVISION_ACTION_",
                );
                let time = revision
                    .create_time
                    .and_then(|time| std::time::SystemTime::try_from(time).ok())
                    .map(|time| humantime::format_rfc3339_seconds(time).to_string())
                    .unwrap_or_default();
                println!(
                    "{:>8}  {:<10} {:<22} {:<16} {}",
                    revision.revision, action, time, revision.author, revision.reason
                );
            }
        }
        Command::Rollback {
            id,
            to_revision,
            reason,
        } => {
            let request = remote.request(v1::RollbackExperimentRequest {
                id,
                to_revision,
                revision: 0,
                reason,
                rerandomize: false,
            });
            let answer = remote
                .admin
                .rollback_experiment(request)
                .await?
                .into_inner();
            println!(
                "rolled back to revision {to_revision}: {}",
                summary(&answer.experiment.unwrap_or_default())
            );
        }
        Command::Override { command } => overrides(&mut remote, command).await?,
        Command::Holdout { command } => holdouts::run(&mut remote, command).await?,
        Command::Results {
            id,
            alpha,
            position: _,
            timeline: Some(granularity),
        } => {
            let request = remote.request(v1::GetResultsTimelineRequest {
                experiment_id: id,
                alpha,
                granularity: match granularity {
                    GranularityArg::Hour => v1::TimelineGranularity::Hour,
                    GranularityArg::Day => v1::TimelineGranularity::Day,
                } as i32,
            });
            let timeline = remote
                .results
                .get_results_timeline(request)
                .await?
                .into_inner();
            print!("{}", table::render_timeline(&timeline));
        }
        Command::Plan {
            rate,
            mean,
            variance,
            mde,
            alpha,
            power,
            weights,
            traffic,
            daily_units,
            placement,
            experiment,
        } => {
            use v1::plan_experiment_request::Baseline;
            let baseline = match (rate, mean, variance) {
                (Some(rate), _, _) => Baseline::BaselineRate(rate),
                (None, Some(mean), Some(variance)) => {
                    Baseline::BaselineMean(v1::MeanBaseline { mean, variance })
                }
                _ => return Err(Failure("give --rate, or --mean and --variance".into())),
            };
            let request = remote.request(v1::PlanExperimentRequest {
                baseline: Some(baseline),
                minimum_detectable_effect: mde,
                alpha,
                power,
                weights,
                traffic_percent: traffic,
                daily_units,
                experiment_id: experiment.unwrap_or_default(),
                placement: placement.unwrap_or_default(),
            });
            let planned = remote.results.plan_experiment(request).await?.into_inner();
            print!("{}", table::render_plan(&planned));
        }
        Command::Results {
            id,
            alpha,
            position,
            timeline: None,
        } => {
            let request = remote.request(v1::GetResultsRequest {
                experiment_id: id,
                alpha,
                min_position: position,
            });
            let results = remote.results.get_results(request).await?.into_inner();
            print!("{}", table::render(&results));
        }
    }
    Ok(())
}

async fn overrides(remote: &mut Remote, command: OverrideCommand) -> Result<(), Failure> {
    match command {
        OverrideCommand::Set {
            id,
            unit_type,
            unit,
            variant,
            expires_in,
            reason,
        } => {
            let request = remote.request(v1::SetOverrideRequest {
                qa_override: Some(v1::QaOverride {
                    experiment_id: id,
                    unit_type: unit_type.to_proto(),
                    unit_id: unit,
                    variant,
                    expire_time: expires_in
                        .map(|lifetime| (std::time::SystemTime::now() + lifetime).into()),
                    reason,
                    ..Default::default()
                }),
            });
            let answer = remote.admin.set_override(request).await?.into_inner();
            let set = answer.qa_override.unwrap_or_default();
            println!(
                "override: {} -> {} in {}",
                set.unit_id, set.variant, set.experiment_id
            );
        }
        OverrideCommand::Delete {
            id,
            unit_type,
            unit,
        } => {
            let request = remote.request(v1::DeleteOverrideRequest {
                experiment_id: id.clone(),
                unit_type: unit_type.to_proto(),
                unit_id: unit.clone(),
            });
            remote.admin.delete_override(request).await?;
            println!("override of {unit} in {id} deleted");
        }
        OverrideCommand::List { id } => {
            let request = remote.request(v1::ListOverridesRequest {
                experiment_id: id,
                include_expired: false,
            });
            let answer = remote.admin.list_overrides(request).await?.into_inner();
            for qa_override in answer.qa_overrides {
                print!(
                    "{}",
                    file::to_yaml("experiments.v1.QaOverride", &qa_override)
                );
                println!("---");
            }
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message)) => {
            eprintln!("expctl: {message}");
            ExitCode::FAILURE
        }
    }
}
