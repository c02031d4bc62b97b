//! The statuses stored as text, typed: callers name an enum variant, and the store converts at
//! its boundary (`as_str` when writing, `parse` when reading), so no bare status string is
//! written or compared anywhere else.

macro_rules! stored_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The text stored in the database.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// The variant a stored text names; `None` for text no version of radsight wrote.
            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl From<$name> for sea_orm::Value {
            fn from(v: $name) -> sea_orm::Value {
                v.as_str().into()
            }
        }
    };
}

stored_enum! {
    /// `analysis_results.status`.
    ResultStatus {
        /// Announced or queued; no model has run yet.
        Pending = "pending",
        Running = "running",
        /// A model ran and its findings, explanation and pictures are stored.
        Done = "done",
        /// The analysis cannot be completed (undecodable image, refused model).
        Failed = "failed",
        /// No model is meant for this kind of image; no card is shown.
        NotApplicable = "not-applicable",
    }
}

stored_enum! {
    /// `jobs.state`.
    JobState {
        Queued = "queued",
        Running = "running",
        Succeeded = "succeeded",
        Dead = "dead",
    }
}

stored_enum! {
    /// `jobs.stage`: the last step a job reached.
    JobStage {
        Received = "received",
        /// No PACS is known for the study; it waits for a fetch.
        FetchPending = "fetch-pending",
        /// A result is stored.
        Analysed = "analysed",
        /// No model applies to the study's images.
        NotApplicable = "not-applicable",
    }
}

impl crate::store::entities::analysis_result::Model {
    /// The typed status; a row with an unknown status counts as pending (nothing to show yet).
    pub fn result_status(&self) -> ResultStatus {
        ResultStatus::parse(&self.status).unwrap_or(ResultStatus::Pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_reads_back_as_itself() {
        for s in ResultStatus::ALL {
            assert_eq!(ResultStatus::parse(s.as_str()), Some(*s));
        }
        for s in JobState::ALL {
            assert_eq!(JobState::parse(s.as_str()), Some(*s));
        }
        for s in JobStage::ALL {
            assert_eq!(JobStage::parse(s.as_str()), Some(*s));
        }
        assert_eq!(ResultStatus::parse("finished"), None);
    }
}
