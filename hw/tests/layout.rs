//! Every size, alignment, field offset and constant of the ABI, checked
//! three ways: against literal numbers written here, against the generated
//! Rust bindings, and against the C compiler reading the real header.

use core::mem::{align_of, offset_of, size_of, size_of_val};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use hwlink_hw::*;

/// Expected layout of one struct: name, size, alignment and every field as
/// (name, offset, size), in declaration order.
struct Expected {
    name: &'static str,
    size: usize,
    align: usize,
    fields: Vec<(&'static str, usize, usize)>,
}

/// `layout!(T, size, align { field @ offset : bytes, ... })` checks the Rust
/// struct against the literals and returns them as an [`Expected`]. The
/// exhaustive destructuring fails to compile if a field is missing from the
/// list or the struct gains one.
macro_rules! layout {
    ($t:ident, $size:literal, $align:literal { $($f:ident @ $off:literal : $len:literal),* $(,)? }) => {{
        let value = <$t>::default();
        let $t { $($f: _),* } = value;
        assert_eq!(size_of::<$t>(), $size, "size_of {}", stringify!($t));
        assert_eq!(align_of::<$t>(), $align, "align_of {}", stringify!($t));
        $(
            assert_eq!(offset_of!($t, $f), $off, "offset_of {}.{}", stringify!($t), stringify!($f));
            assert_eq!(size_of_val(&value.$f), $len, "size of {}.{}", stringify!($t), stringify!($f));
        )*
        Expected {
            name: stringify!($t),
            size: $size,
            align: $align,
            fields: vec![$((stringify!($f), $off, $len)),*],
        }
    }};
}

fn expected_layouts() -> Vec<Expected> {
    vec![
        layout!(hwl_process, 64, 8 {
            magic @ 0 : 8,
            abi_version @ 8 : 4,
            token @ 12 : 4,
            lock @ 16 : 4,
            pid @ 20 : 4,
            start_time @ 24 : 8,
            comm @ 32 : 16,
            resv @ 48 : 16,
        }),
        layout!(hwl_object, 72, 8 {
            kind @ 0 : 4,
            flags @ 4 : 4,
            offset @ 8 : 8,
            size @ 16 : 8,
            name @ 24 : 48,
        }),
        layout!(hwl_region, 4096, 8 {
            magic @ 0 : 8,
            abi_version @ 8 : 4,
            features @ 12 : 4,
            flags @ 16 : 4,
            page_size @ 20 : 4,
            total_size @ 24 : 8,
            creator_pid @ 32 : 4,
            object_count @ 36 : 4,
            creator_token @ 40 : 4,
            resv0 @ 44 : 4,
            name @ 48 : 48,
            resv1 @ 96 : 160,
            objects @ 256 : 2304,
            resv2 @ 2560 : 1536,
        }),
        layout!(hwl_doorbell, 64, 4 {
            count @ 0 : 4,
            waiters @ 4 : 4,
            resv @ 8 : 56,
        }),
        layout!(hwl_endpoint, 32, 8 {
            pid @ 0 : 4,
            state @ 4 : 4,
            token @ 8 : 4,
            resv0 @ 12 : 4,
            cpu_mask @ 16 : 8,
            wait_mode @ 24 : 4,
            doorbell @ 28 : 4,
        }),
        layout!(hwl_spsc_ring, 512, 8 {
            tail @ 0 : 4,
            published @ 4 : 4,
            pad0 @ 8 : 56,
            guard0 @ 64 : 64,
            head @ 128 : 4,
            released @ 132 : 4,
            pad1 @ 136 : 56,
            guard1 @ 192 : 64,
            capacity @ 256 : 4,
            slot_size @ 260 : 4,
            slot_stride @ 264 : 4,
            flags @ 268 : 4,
            slots_offset @ 272 : 8,
            max_messages @ 280 : 4,
            resv3 @ 284 : 4,
            resv2 @ 288 : 32,
            producer @ 320 : 32,
            consumer @ 352 : 32,
            not_empty @ 384 : 64,
            not_full @ 448 : 64,
        }),
        layout!(hwl_slot, 8, 4 {
            len @ 0 : 4,
            seq @ 4 : 4,
        }),
        layout!(hwl_mpmc_ring, 384, 8 {
            enqueue_pos @ 0 : 8,
            pad0 @ 8 : 56,
            guard0 @ 64 : 64,
            dequeue_pos @ 128 : 8,
            pad1 @ 136 : 56,
            guard1 @ 192 : 64,
            capacity @ 256 : 4,
            slot_size @ 260 : 4,
            slot_stride @ 264 : 4,
            flags @ 268 : 4,
            slots_offset @ 272 : 8,
            segment @ 280 : 8,
            next_segment @ 288 : 8,
            resv @ 296 : 88,
        }),
        layout!(hwl_mpmc_slot, 16, 8 {
            seq @ 0 : 8,
            len @ 8 : 4,
            sender @ 12 : 4,
        }),
        layout!(hwl_attachment, 16, 4 {
            pid @ 0 : 4,
            mode @ 4 : 4,
            token @ 8 : 4,
            resv0 @ 12 : 4,
        }),
        layout!(hwl_mailbox, 1344, 8 {
            id @ 0 : 8,
            buffering @ 8 : 4,
            access @ 12 : 4,
            capacity @ 16 : 4,
            slot_size @ 20 : 4,
            byte_limit @ 24 : 8,
            resv0 @ 32 : 32,
            bytes_in_use @ 64 : 8,
            last_segment @ 72 : 8,
            head_segment @ 80 : 8,
            tail_segment @ 88 : 8,
            spare_segment @ 96 : 8,
            resv1 @ 104 : 24,
            removed @ 128 : 4,
            resv2 @ 132 : 60,
            not_empty @ 192 : 64,
            not_full @ 256 : 64,
            attachments @ 320 : 1024,
        }),
        layout!(hwl_domain, 128, 8 {
            max_members @ 0 : 4,
            buffering @ 4 : 4,
            capacity @ 8 : 4,
            slot_size @ 12 : 4,
            byte_limit @ 16 : 8,
            members_offset @ 24 : 8,
            flags @ 32 : 4,
            resv0 @ 36 : 4,
            resv1 @ 40 : 24,
            state @ 64 : 4,
            next_generation @ 68 : 4,
            resv2 @ 72 : 56,
        }),
        layout!(hwl_member, 128, 8 {
            state @ 0 : 4,
            generation @ 4 : 4,
            pid @ 8 : 4,
            reaper @ 12 : 4,
            token @ 16 : 4,
            resv0 @ 20 : 4,
            pending_links @ 24 : 8,
            name @ 32 : 32,
            inbox @ 64 : 64,
        }),
        // Rendezvous (zero-capacity hand-off).
        layout!(hwl_rendezvous, 704, 8 {
            cells @ 0 : 4,
            slot_size @ 4 : 4,
            cell_stride @ 8 : 4,
            flags @ 12 : 4,
            cells_offset @ 16 : 8,
            resv0 @ 24 : 40,
            next_ticket @ 64 : 4,
            pad1 @ 68 : 60,
            cells_bell @ 128 : 64,
            state @ 192 : 512,
        }),
        // Topics.
        layout!(hwl_topic, 384, 8 {
            id @ 0 : 8,
            capacity @ 8 : 4,
            slot_size @ 12 : 4,
            slot_stride @ 16 : 4,
            max_subscribers @ 20 : 4,
            history @ 24 : 4,
            backpressure @ 28 : 4,
            subs_offset @ 32 : 8,
            slots_offset @ 40 : 8,
            resv0 @ 48 : 16,
            tail @ 64 : 8,
            reclaim @ 72 : 8,
            pad1 @ 80 : 48,
            publisher @ 128 : 4,
            publisher_pid @ 132 : 4,
            publisher_wait @ 136 : 4,
            resv1 @ 140 : 4,
            publisher_cpus @ 144 : 8,
            pad2 @ 152 : 40,
            users @ 192 : 4,
            sleepy @ 196 : 4,
            removed @ 200 : 4,
            pad3 @ 204 : 52,
            sleeping @ 256 : 32,
            attached @ 288 : 32,
            not_full @ 320 : 64,
        }),
        layout!(hwl_topic_sub, 128, 8 {
            cursor @ 0 : 8,
            token @ 8 : 4,
            pid @ 12 : 4,
            lagged @ 16 : 8,
            resv0 @ 24 : 40,
            bell @ 64 : 64,
        }),
        layout!(hwl_topic_slot, 16, 8 {
            seq @ 0 : 8,
            len @ 8 : 4,
            resv @ 12 : 4,
        }),
        layout!(hwl_rdv_cell, 64, 8 {
            owner @ 0 : 4,
            len @ 4 : 4,
            resv2 @ 8 : 8,
            ticket @ 16 : 4,
            resv0 @ 20 : 4,
            owner_count @ 24 : 4,
            owner_waiters @ 28 : 4,
            peer_count @ 32 : 4,
            peer_waiters @ 36 : 4,
            resv1 @ 40 : 24,
        }),
    ]
}

/// Every `HWL_*` constant of the header with its expected value.
fn expected_constants() -> Vec<(&'static str, u64, u64)> {
    // (name, literal expected value, value of the generated Rust constant)
    vec![
        ("HWL_REGION_MAGIC", 0x0100_4b4e_494c_5748, HWL_REGION_MAGIC),
        (
            "HWL_REGION_CLAIMED",
            0x4d49_414c_434c_5748,
            HWL_REGION_CLAIMED,
        ),
        ("HWL_ABI_VERSION", 6, HWL_ABI_VERSION.into()),
        ("HWL_RING_PACKED", 1, HWL_RING_PACKED.into()),
        ("HWL_RECORD_UNIT", 16, HWL_RECORD_UNIT.into()),
        ("HWL_RECORD_PAD", 0xFFFF_FFFF, HWL_RECORD_PAD.into()),
        ("HWL_FEAT_TOPIC", 64, HWL_FEAT_TOPIC.into()),
        ("HWL_OBJ_TOPIC", 6, HWL_OBJ_TOPIC.into()),
        (
            "HWL_TOPIC_MAX_SUBSCRIBERS",
            256,
            HWL_TOPIC_MAX_SUBSCRIBERS.into(),
        ),
        (
            "HWL_TOPIC_SLOT_HDR_SIZE",
            16,
            HWL_TOPIC_SLOT_HDR_SIZE.into(),
        ),
        ("HWL_TOPIC_POS_LIMIT", 1 << 62, HWL_TOPIC_POS_LIMIT),
        (
            "HWL_TOPIC_SEQ_WRITING",
            1 << 63,
            HWL_TOPIC_SEQ_WRITING as u64,
        ),
        ("HWL_TOPIC_BLOCK", 0, HWL_TOPIC_BLOCK.into()),
        ("HWL_TOPIC_OVERWRITE", 1, HWL_TOPIC_OVERWRITE.into()),
        ("HWL_CACHELINE", 64, HWL_CACHELINE.into()),
        ("HWL_REGION_HDR_SIZE", 4096, HWL_REGION_HDR_SIZE.into()),
        ("HWL_OBJ_ALIGN", 4096, HWL_OBJ_ALIGN.into()),
        ("HWL_MAX_OBJECTS", 32, HWL_MAX_OBJECTS.into()),
        ("HWL_NAME_LEN", 48, HWL_NAME_LEN.into()),
        ("HWL_FEAT_SPSC_RING", 1, HWL_FEAT_SPSC_RING.into()),
        ("HWL_FEAT_FUTEX_DOORBELL", 2, HWL_FEAT_FUTEX_DOORBELL.into()),
        ("HWL_REGION_F_HUGEPAGE", 1, HWL_REGION_F_HUGEPAGE.into()),
        ("HWL_REGION_F_DEVICE", 2, HWL_REGION_F_DEVICE.into()),
        ("HWL_OBJ_NONE", 0, HWL_OBJ_NONE.into()),
        ("HWL_OBJ_SPSC_RING", 1, HWL_OBJ_SPSC_RING.into()),
        ("HWL_EP_FREE", 0, HWL_EP_FREE.into()),
        ("HWL_EP_ATTACHED", 1, HWL_EP_ATTACHED.into()),
        ("HWL_EP_CLOSED", 2, HWL_EP_CLOSED.into()),
        (
            "HWL_EP_DOORBELL_IVSHMEM",
            1 << 31,
            HWL_EP_DOORBELL_IVSHMEM.into(),
        ),
        ("HWL_WAIT_MAY_SLEEP", 0, HWL_WAIT_MAY_SLEEP.into()),
        ("HWL_WAIT_POLL", 1, HWL_WAIT_POLL.into()),
        (
            "HWL_RING_MAX_CAPACITY",
            1 << 24,
            HWL_RING_MAX_CAPACITY.into(),
        ),
        (
            "HWL_RING_MAX_SLOT_SIZE",
            1 << 30,
            HWL_RING_MAX_SLOT_SIZE.into(),
        ),
        ("HWL_SLOT_HDR_SIZE", 8, HWL_SLOT_HDR_SIZE.into()),
        ("HWL_FEAT_MPMC_RING", 4, HWL_FEAT_MPMC_RING.into()),
        ("HWL_FEAT_MAILBOX", 16, HWL_FEAT_MAILBOX.into()),
        ("HWL_OBJ_MPMC_RING", 2, HWL_OBJ_MPMC_RING.into()),
        ("HWL_OBJ_MAILBOX", 4, HWL_OBJ_MAILBOX.into()),
        ("HWL_MPMC_SEALED", 1 << 63, HWL_MPMC_SEALED as u64),
        ("HWL_MPMC_SOLO", 1, HWL_MPMC_SOLO.into()),
        ("HWL_MPMC_SLOT_HDR_SIZE", 16, HWL_MPMC_SLOT_HDR_SIZE.into()),
        ("HWL_MPMC_POS_LIMIT", 1 << 56, HWL_MPMC_POS_LIMIT),
        (
            "HWL_MPMC_SEQ_TAG_MASK",
            3 << 62,
            HWL_MPMC_SEQ_TAG_MASK as u64,
        ),
        ("HWL_MPMC_SEQ_WRITING", 1 << 62, HWL_MPMC_SEQ_WRITING),
        ("HWL_MPMC_SEQ_READING", 2 << 62, HWL_MPMC_SEQ_READING as u64),
        ("HWL_MPMC_SEQ_VOID", 3 << 62, HWL_MPMC_SEQ_VOID as u64),
        (
            "HWL_MPMC_SEQ_OWNER_SHIFT",
            56,
            HWL_MPMC_SEQ_OWNER_SHIFT.into(),
        ),
        ("HWL_MPMC_SEQ_OWNER_MASK", 63 << 56, HWL_MPMC_SEQ_OWNER_MASK),
        (
            "HWL_PROCESS_MAGIC",
            0x0243_4f52_504c_5748,
            HWL_PROCESS_MAGIC,
        ),
        ("HWL_PROCESS_FILE_SIZE", 4096, HWL_PROCESS_FILE_SIZE.into()),
        (
            "HWL_PROCESS_OWNER_DIED",
            1 << 30,
            HWL_PROCESS_OWNER_DIED.into(),
        ),
        (
            "HWL_PROCESS_TID_MASK",
            0x3fff_ffff,
            HWL_PROCESS_TID_MASK.into(),
        ),
        ("HWL_PROCESS_WAITERS", 1 << 31, HWL_PROCESS_WAITERS.into()),
        ("HWL_BUF_ZERO", 0, HWL_BUF_ZERO.into()),
        ("HWL_BUF_BOUNDED", 1, HWL_BUF_BOUNDED.into()),
        ("HWL_BUF_UNBOUNDED", 2, HWL_BUF_UNBOUNDED.into()),
        ("HWL_ACCESS_SEND", 1, HWL_ACCESS_SEND.into()),
        ("HWL_ACCESS_RECV", 2, HWL_ACCESS_RECV.into()),
        ("HWL_MAX_ATTACHMENTS", 64, HWL_MAX_ATTACHMENTS.into()),
        ("HWL_FEAT_DOMAIN", 32, HWL_FEAT_DOMAIN.into()),
        ("HWL_OBJ_DOMAIN", 5, HWL_OBJ_DOMAIN.into()),
        ("HWL_DOMAIN_MAX_MEMBERS", 64, HWL_DOMAIN_MAX_MEMBERS.into()),
        ("HWL_MEMBER_NAME_LEN", 32, HWL_MEMBER_NAME_LEN.into()),
        ("HWL_DOMAIN_BUF_BOUNDED", 1, HWL_DOMAIN_BUF_BOUNDED.into()),
        ("HWL_DOMAIN_BUF_ZERO", 2, HWL_DOMAIN_BUF_ZERO.into()),
        (
            "HWL_DOMAIN_BUF_UNBOUNDED",
            3,
            HWL_DOMAIN_BUF_UNBOUNDED.into(),
        ),
        ("HWL_DOMAIN_OPEN", 0, HWL_DOMAIN_OPEN.into()),
        ("HWL_DOMAIN_CLOSING", 1, HWL_DOMAIN_CLOSING.into()),
        ("HWL_DOMAIN_CLOSED", 2, HWL_DOMAIN_CLOSED.into()),
        ("HWL_MEMBER_FREE", 0, HWL_MEMBER_FREE.into()),
        ("HWL_MEMBER_JOINING", 1, HWL_MEMBER_JOINING.into()),
        ("HWL_MEMBER_ACTIVE", 2, HWL_MEMBER_ACTIVE.into()),
        ("HWL_MEMBER_LEAVING", 3, HWL_MEMBER_LEAVING.into()),
        // Rendezvous (zero-capacity hand-off).
        ("HWL_FEAT_RENDEZVOUS", 8, HWL_FEAT_RENDEZVOUS.into()),
        ("HWL_OBJ_RENDEZVOUS", 3, HWL_OBJ_RENDEZVOUS.into()),
        ("HWL_RDV_MAX_CELLS", 64, HWL_RDV_MAX_CELLS.into()),
        ("HWL_RDV_CELL_HDR_SIZE", 64, HWL_RDV_CELL_HDR_SIZE.into()),
        ("HWL_RDV_FREE", 0, HWL_RDV_FREE.into()),
        ("HWL_RDV_CLAIMED", 1, HWL_RDV_CLAIMED.into()),
        ("HWL_RDV_RECV_WAITING", 2, HWL_RDV_RECV_WAITING.into()),
        ("HWL_RDV_FILLING", 3, HWL_RDV_FILLING.into()),
        ("HWL_RDV_FILLED", 4, HWL_RDV_FILLED.into()),
        ("HWL_RDV_READING", 5, HWL_RDV_READING.into()),
        ("HWL_RDV_ACKED", 6, HWL_RDV_ACKED.into()),
        ("HWL_RDV_SEND_WAITING", 7, HWL_RDV_SEND_WAITING.into()),
        ("HWL_RDV_TAKING", 8, HWL_RDV_TAKING.into()),
        ("HWL_RDV_TAKEN", 9, HWL_RDV_TAKEN.into()),
    ]
}

#[test]
fn struct_layouts_match_literals() {
    let layouts = expected_layouts();
    assert_eq!(layouts.len(), 18);
    for l in &layouts {
        // The header promises explicit padding: the fields tile the struct
        // exactly, with no hole the compiler filled in.
        let mut end = 0;
        for &(field, offset, size) in &l.fields {
            assert_eq!(offset, end, "{}.{} leaves a hole before it", l.name, field);
            assert_eq!(
                offset % size_of_natural(size),
                0,
                "{}.{} misaligned",
                l.name,
                field
            );
            end = offset + size;
        }
        assert_eq!(end, l.size, "{} has tail padding", l.name);
        assert_eq!(l.size % l.align, 0, "{}", l.name);
    }
}

/// The alignment a field of `size` bytes needs at least (arrays and
/// structs here are made of 4- and 8-byte words, or bytes).
fn size_of_natural(size: usize) -> usize {
    match size {
        8 => 8,
        4 => 4,
        _ => 1,
    }
}

#[test]
fn header_sizes_agree_with_constants() {
    assert_eq!(size_of::<hwl_region>(), HWL_REGION_HDR_SIZE as usize);
    assert_eq!(size_of::<hwl_slot>(), HWL_SLOT_HDR_SIZE as usize);
    assert_eq!(size_of::<hwl_doorbell>(), HWL_CACHELINE as usize);
    let region = hwl_region::default();
    assert_eq!(region.objects.len(), HWL_MAX_OBJECTS as usize);
    assert_eq!(region.name.len(), HWL_NAME_LEN as usize);
    assert_eq!(hwl_object::default().name.len(), HWL_NAME_LEN as usize);
    // The object table starts on a cache line and the header is one page.
    assert_eq!(offset_of!(hwl_region, objects) % HWL_CACHELINE as usize, 0);
    assert_eq!(HWL_REGION_HDR_SIZE, HWL_OBJ_ALIGN);
}

#[test]
fn ring_words_owned_by_one_side_sit_on_their_own_cache_line() {
    let line = |offset: usize| offset / HWL_CACHELINE as usize;
    assert_eq!(line(offset_of!(hwl_spsc_ring, tail)), 0);
    assert_eq!(line(offset_of!(hwl_spsc_ring, head)), 2);
    assert_eq!(line(offset_of!(hwl_spsc_ring, capacity)), 4);
    assert_eq!(line(offset_of!(hwl_spsc_ring, slots_offset) + 7), 4);
    assert_eq!(line(offset_of!(hwl_spsc_ring, producer)), 5);
    assert_eq!(line(offset_of!(hwl_spsc_ring, consumer) + 31), 5);
    assert_eq!(line(offset_of!(hwl_spsc_ring, not_empty)), 6);
    assert_eq!(line(offset_of!(hwl_spsc_ring, not_full)), 7);
    assert_eq!(size_of::<hwl_spsc_ring>() as u64, RING_CONTROL_BYTES);
    // Futex words must be 4-byte aligned u32s; 64-bit atomics 8-byte aligned.
    assert_eq!(offset_of!(hwl_spsc_ring, not_empty) % 4, 0);
    assert_eq!(offset_of!(hwl_spsc_ring, not_full) % 4, 0);
    assert_eq!(offset_of!(hwl_region, magic) % 8, 0);
}

#[test]
fn domain_lines_and_words() {
    let line = |offset: usize| offset / HWL_CACHELINE as usize;
    // Configuration on line 0, the words joiners and leavers change on line 1.
    assert_eq!(line(offset_of!(hwl_domain, resv1) + 23), 0);
    assert_eq!(line(offset_of!(hwl_domain, state)), 1);
    assert_eq!(size_of::<hwl_domain>() % HWL_CACHELINE as usize, 0);
    // A member entry is two whole lines; its inbox doorbell has the second.
    assert_eq!(size_of::<hwl_member>(), 2 * HWL_CACHELINE as usize);
    assert_eq!(line(offset_of!(hwl_member, inbox)), 1);
    // state and generation form one little-endian u64 (state low).
    assert_eq!(offset_of!(hwl_member, state), 0);
    assert_eq!(offset_of!(hwl_member, generation), 4);
    assert_eq!(offset_of!(hwl_member, pending_links) % 8, 0);
    // One bit of pending_links per member.
    assert_eq!(HWL_DOMAIN_MAX_MEMBERS, u64::BITS);
    assert_eq!(
        hwl_member::default().name.len(),
        HWL_MEMBER_NAME_LEN as usize
    );
}

#[test]
fn rendezvous_words_sit_where_the_protocol_expects() {
    let line = |offset: usize| offset / HWL_CACHELINE as usize;
    assert_eq!(line(offset_of!(hwl_rendezvous, cells_offset) + 7), 0);
    assert_eq!(line(offset_of!(hwl_rendezvous, next_ticket)), 1);
    assert_eq!(line(offset_of!(hwl_rendezvous, cells_bell)), 2);
    assert_eq!(line(offset_of!(hwl_rendezvous, state)), 3);
    assert_eq!(
        hwl_rendezvous::default().state.len(),
        HWL_RDV_MAX_CELLS as usize
    );
    assert_eq!(size_of::<hwl_rendezvous>() % HWL_CACHELINE as usize, 0);
    assert_eq!(size_of::<hwl_rdv_cell>(), HWL_RDV_CELL_HDR_SIZE as usize);
    // State words are 64-bit atomics; futex words 4-byte aligned.
    assert_eq!(offset_of!(hwl_rendezvous, state) % 8, 0);
    assert_eq!(offset_of!(hwl_rdv_cell, owner_count) % 4, 0);
    assert_eq!(offset_of!(hwl_rdv_cell, peer_count) % 4, 0);
    assert_eq!(offset_of!(hwl_rdv_cell, resv2) % 8, 0);
}

#[test]
fn constants_match_literals() {
    for (name, expected, actual) in expected_constants() {
        assert_eq!(actual, expected, "{name}");
    }
    assert_eq!(&HWL_REGION_MAGIC.to_le_bytes(), b"HWLINK\0\x01");
    assert_eq!(&HWL_REGION_CLAIMED.to_le_bytes(), b"HWLCLAIM");
    assert_eq!(&HWL_PROCESS_MAGIC.to_le_bytes(), b"HWLPROC\x02");
    assert_eq!(REGION_MAGIC, HWL_REGION_MAGIC);
    assert!(HWL_RING_MAX_CAPACITY.is_power_of_two());
    assert_eq!(
        HWL_FEAT_SPSC_RING & HWL_FEAT_FUTEX_DOORBELL,
        0,
        "feature bits overlap"
    );
    assert_eq!(
        HWL_REGION_F_HUGEPAGE & HWL_REGION_F_DEVICE,
        0,
        "flag bits overlap"
    );
}

/// The lists above name every struct and `HWL_*` macro the header has, so
/// a new one cannot go unchecked.
#[test]
fn every_header_item_is_listed() {
    let header =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("include/hwlink_abi.h"))
            .unwrap();
    let mut structs = Vec::new();
    let mut macros = Vec::new();
    for line in header.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["struct", name, "{", ..] => structs.push(name.to_string()),
            ["#define", name, ..] if name.starts_with("HWL_") => macros.push(name.to_string()),
            _ => {}
        }
    }
    let mut listed_structs: Vec<String> = expected_layouts()
        .iter()
        .map(|l| l.name.to_owned())
        .collect();
    let mut listed_macros: Vec<String> = expected_constants()
        .iter()
        .map(|c| c.0.to_owned())
        .collect();
    structs.sort();
    macros.sort();
    listed_structs.sort();
    listed_macros.sort();
    assert_eq!(structs, listed_structs, "structs of hwlink_abi.h");
    assert_eq!(macros, listed_macros, "HWL_* macros of hwlink_abi.h");
}

/// Compiles a C program against the real header that prints every size,
/// alignment, offset and constant, and compares its output with the Rust
/// side (the literals above, which the Rust bindings were checked against).
#[test]
fn c_compiler_agrees() {
    // HWLINK_LAYOUT_CC: a compiler for the architecture under test when it
    // is not the build machine's (ci/aarch64.sh: aarch64-linux-gnu-gcc; the
    // program then runs through binfmt_misc and qemu-user).
    let cc = std::env::var("HWLINK_LAYOUT_CC")
        .or_else(|_| std::env::var("CC"))
        .unwrap_or_else(|_| "cc".to_owned());
    match Command::new(&cc).arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            eprintln!(
                "SKIPPED: c_compiler_agrees: `{cc} --version` failed ({}), no C compiler",
                out.status
            );
            return;
        }
        Err(e) => {
            eprintln!("SKIPPED: c_compiler_agrees: no C compiler `{cc}` ({e})");
            return;
        }
    }

    let layouts = expected_layouts();
    let constants = expected_constants();

    let mut src = String::from(
        "#include <stddef.h>\n#include <stdio.h>\n#include \"hwlink_abi.h\"\n\
         #define FIELD(s, f) printf(\"field %s %s %zu %zu\\n\", #s, #f, \
         offsetof(struct s, f), sizeof(((struct s *)0)->f))\n\
         int main(void)\n{\n",
    );
    for l in &layouts {
        src += &format!(
            "\tprintf(\"struct %s %zu %zu\\n\", \"{0}\", sizeof(struct {0}), _Alignof(struct {0}));\n",
            l.name
        );
        for (field, _, _) in &l.fields {
            src += &format!("\tFIELD({}, {field});\n", l.name);
        }
    }
    for (name, _, _) in &constants {
        src +=
            &format!("\tprintf(\"const %s %llu\\n\", \"{name}\", (unsigned long long)({name}));\n");
    }
    src += "\treturn 0;\n}\n";

    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hwlink-hw-layout");
    std::fs::create_dir_all(&dir).unwrap();
    let c_path = dir.join("layout.c");
    let exe = dir.join("layout");
    std::fs::write(&c_path, &src).unwrap();
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("include");
    let out = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&exe)
        .arg("-I")
        .arg(&include)
        .arg(&c_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cc} failed on {}:\n{}",
        c_path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(&exe).output().unwrap();
    assert!(out.status.success(), "{} failed", exe.display());
    let stdout = String::from_utf8(out.stdout).unwrap();

    let mut from_c: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for line in stdout.lines() {
        let words: Vec<&str> = line.split(' ').collect();
        let (key, numbers) = match words[0] {
            "struct" | "const" => (words[..2].join(" "), &words[2..]),
            "field" => (words[..3].join(" "), &words[3..]),
            other => panic!("unexpected line from the C program: {other}"),
        };
        let numbers = numbers.iter().map(|n| n.parse().unwrap()).collect();
        assert!(from_c.insert(key, numbers).is_none(), "duplicate: {line}");
    }

    let mut expected: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let n = |x: usize| x as u64;
    for l in &layouts {
        expected.insert(format!("struct {}", l.name), vec![n(l.size), n(l.align)]);
        for &(field, offset, size) in &l.fields {
            expected.insert(
                format!("field {} {field}", l.name),
                vec![n(offset), n(size)],
            );
        }
    }
    for (name, value, _) in &constants {
        expected.insert(format!("const {name}"), vec![*value]);
    }

    for (key, want) in &expected {
        assert_eq!(from_c.get(key), Some(want), "C and Rust disagree on {key}");
    }
    assert_eq!(from_c.len(), expected.len());
    eprintln!(
        "c_compiler_agrees: {} facts checked with {cc}",
        expected.len()
    );
}
