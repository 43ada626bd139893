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
            creator_start_time @ 40 : 8,
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
            start_time @ 8 : 8,
            cpu_mask @ 16 : 8,
            wait_mode @ 24 : 4,
            doorbell @ 28 : 4,
        }),
        layout!(hwl_spsc_ring, 512, 8 {
            tail @ 0 : 4,
            pad0 @ 4 : 60,
            guard0 @ 64 : 64,
            head @ 128 : 4,
            pad1 @ 132 : 60,
            guard1 @ 192 : 64,
            capacity @ 256 : 4,
            slot_size @ 260 : 4,
            slot_stride @ 264 : 4,
            flags @ 268 : 4,
            slots_offset @ 272 : 8,
            resv2 @ 280 : 40,
            producer @ 320 : 32,
            consumer @ 352 : 32,
            not_empty @ 384 : 64,
            not_full @ 448 : 64,
        }),
        layout!(hwl_slot, 8, 4 {
            len @ 0 : 4,
            seq @ 4 : 4,
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
        ("HWL_ABI_VERSION", 1, HWL_ABI_VERSION.into()),
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
    ]
}

#[test]
fn struct_layouts_match_literals() {
    let layouts = expected_layouts();
    assert_eq!(layouts.len(), 6);
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
fn constants_match_literals() {
    for (name, expected, actual) in expected_constants() {
        assert_eq!(actual, expected, "{name}");
    }
    assert_eq!(&HWL_REGION_MAGIC.to_le_bytes(), b"HWLINK\0\x01");
    assert_eq!(&HWL_REGION_CLAIMED.to_le_bytes(), b"HWLCLAIM");
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
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
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
