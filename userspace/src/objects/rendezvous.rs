//! The rendezvous object (`struct hwl_rendezvous` and its cells) of a
//! zero-capacity mailbox.
#![warn(clippy::arithmetic_side_effects)]

use crate::error::{Corruption, OpenError};
use crate::region::{ObjectInfo, ObjectInit, RegionMap};
use std::sync::Arc;

/// Lays out a rendezvous object of `cells` cells for messages of up to
/// `slot_size` bytes in a zero-filled object being created.
pub(crate) fn init_rendezvous(obj: ObjectInit, cells: u32, slot_size: u32) {
    // `obj` is exclusively owned (the region is not published yet).
    crate::rendezvous::init(&obj.view, cells, slot_size)
        .expect("rendezvous configuration checked by the creator");
}

/// A validated rendezvous object in a mapped region.
pub(crate) struct RendezvousParts {
    _map: Arc<RegionMap>,
    rdv: crate::rendezvous::Rendezvous,
}

impl std::fmt::Debug for RendezvousParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RendezvousParts")
            .field("region", &self._map.name())
            .field("slot_size", &self.rdv.slot_size())
            .finish()
    }
}

impl RendezvousParts {
    /// Validates the rendezvous object `obj` of `map` (an entry of its
    /// validated table), reading its configuration once.
    pub(crate) fn locate_object(
        map: Arc<RegionMap>,
        obj: &ObjectInfo,
    ) -> Result<RendezvousParts, OpenError> {
        let name = map.name().to_string();
        if obj.kind != hwlink_hw::HWL_OBJ_RENDEZVOUS {
            return Err(OpenError::Corrupt {
                name,
                source: Corruption::new(
                    "object kind (rendezvous)",
                    obj.kind.into(),
                    hwlink_hw::HWL_OBJ_RENDEZVOUS.into(),
                ),
            });
        }
        // The object lies inside the mapping (validated table), is page
        // aligned, and its view keeps it mapped; other processes use it only
        // through the rendezvous protocol.
        let rdv = crate::rendezvous::Rendezvous::from_view(map.object_view(obj))
            .map_err(|source| OpenError::Corrupt { name, source })?;
        Ok(RendezvousParts { _map: map, rdv })
    }

    pub(crate) fn rdv(&self) -> &crate::rendezvous::Rendezvous {
        &self.rdv
    }
}
