//! `expctl holdout ...`: create, list, show, update and end holdouts.
//! Their results are `expctl results <holdout id>`.

use clap::{Subcommand, ValueEnum};
use exp_proto::{file, v1};

use crate::{Failure, Remote, enum_name};

/// What `expctl holdout` does.
#[derive(Debug, Subcommand)]
pub enum HoldoutCommand {
    /// Create a holdout: a share of units kept out of every experiment of
    /// its layers and placements.
    Create {
        /// Holdout id (the experiments' namespace), e.g. reco_holdout_2027h1.
        id: String,
        /// Held-out share in basis points: 1 to 5000 (500 is 5%).
        #[arg(long)]
        share_basis_points: u32,
        /// A layer whose experiments held-out units never get; repeatable.
        #[arg(long = "layer")]
        layers: Vec<String>,
        /// A placement on which held-out units get no experiment;
        /// repeatable.
        #[arg(long = "placement")]
        placements: Vec<String>,
        /// What is held out and why.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List holdouts.
    List {
        /// Only this status.
        #[arg(long, value_enum)]
        status: Option<HoldoutStatusArg>,
    },
    /// Print a holdout as YAML.
    Show {
        /// Holdout id.
        id: String,
    },
    /// Change what is given of an active holdout's layers, placements and
    /// description; its share and salt never change.
    Update {
        /// Holdout id.
        id: String,
        /// The new layers (all of them); repeatable.
        #[arg(long = "layer")]
        layers: Vec<String>,
        /// The new placements (all of them); repeatable.
        #[arg(long = "placement")]
        placements: Vec<String>,
        /// New description.
        #[arg(long)]
        description: Option<String>,
    },
    /// End a holdout: its units get experiments again.
    End {
        /// Holdout id.
        id: String,
    },
}

/// A holdout status on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum HoldoutStatusArg {
    /// Holding units out.
    Active,
    /// Ended.
    Ended,
}

impl HoldoutStatusArg {
    fn to_proto(self) -> i32 {
        match self {
            Self::Active => v1::HoldoutStatus::Active as i32,
            Self::Ended => v1::HoldoutStatus::Ended as i32,
        }
    }
}

fn summary(holdout: &v1::Holdout) -> String {
    let status = enum_name(
        v1::HoldoutStatus::try_from(holdout.status)
            .ok()
            .map(|status| status.as_str_name()),
        "HOLDOUT_STATUS_",
    );
    format!(
        "{} revision {}: {status}, {} basis points of units, layers [{}], placements [{}]",
        holdout.id,
        holdout.revision,
        holdout.share_basis_points,
        holdout.layers.join(", "),
        holdout.placements.join(", "),
    )
}

/// Runs one `expctl holdout` command.
pub async fn run(remote: &mut Remote, command: HoldoutCommand) -> Result<(), Failure> {
    match command {
        HoldoutCommand::Create {
            id,
            share_basis_points,
            layers,
            placements,
            description,
        } => {
            let request = remote.request(v1::CreateHoldoutRequest {
                holdout: Some(v1::Holdout {
                    id,
                    description,
                    share_basis_points,
                    layers,
                    placements,
                    ..Default::default()
                }),
            });
            let created = remote.admin.create_holdout(request).await?.into_inner();
            println!("created {}", summary(&created.holdout.unwrap_or_default()));
        }
        HoldoutCommand::List { status } => {
            let request = remote.request(v1::ListHoldoutsRequest {
                status: status.map_or(0, HoldoutStatusArg::to_proto),
            });
            let answer = remote.admin.list_holdouts(request).await?.into_inner();
            for holdout in &answer.holdouts {
                println!("{}", summary(holdout));
            }
        }
        HoldoutCommand::Show { id } => {
            let request = remote.request(v1::GetHoldoutRequest { id });
            let answer = remote.admin.get_holdout(request).await?.into_inner();
            print!(
                "{}",
                file::to_yaml(
                    "experiments.v1.Holdout",
                    &answer.holdout.unwrap_or_default()
                )
            );
        }
        HoldoutCommand::Update {
            id,
            layers,
            placements,
            description,
        } => {
            let mut paths = Vec::new();
            let mut holdout = v1::Holdout {
                id,
                ..Default::default()
            };
            if !layers.is_empty() {
                holdout.layers = layers;
                paths.push("layers".to_owned());
            }
            if !placements.is_empty() {
                holdout.placements = placements;
                paths.push("placements".to_owned());
            }
            if let Some(description) = description {
                holdout.description = description;
                paths.push("description".to_owned());
            }
            if paths.is_empty() {
                return Err(Failure(
                    "nothing to change: give --layer, --placement or --description (a \
                     holdout's share is fixed at creation)"
                        .into(),
                ));
            }
            let request = remote.request(v1::UpdateHoldoutRequest {
                holdout: Some(holdout),
                update_mask: Some(prost_types::FieldMask { paths }),
            });
            let updated = remote.admin.update_holdout(request).await?.into_inner();
            println!("updated {}", summary(&updated.holdout.unwrap_or_default()));
        }
        HoldoutCommand::End { id } => {
            let request = remote.request(v1::EndHoldoutRequest { id, revision: 0 });
            let ended = remote.admin.end_holdout(request).await?.into_inner();
            println!("ended {}", summary(&ended.holdout.unwrap_or_default()));
        }
    }
    Ok(())
}
