//! Server-side summary check of completed workouts (not implemented yet: see the README).

use fitedge_core::sync::docs::WorkoutDoc;
use fitedge_core::sync::protocol::DocumentId;

use crate::state::AppState;

/// Called after a workout document change was committed.
pub fn after_commit(_state: &AppState, _id: &DocumentId, _w: &WorkoutDoc) {}
