/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note) OR MIT */
/*
 * hwlink shared-memory ABI: the byte layout of regions, rings and doorbells.
 *
 * This header is the single source of truth. The Rust bindings in
 * hw/src/sys_x86_64.rs are generated from it (ci/check-bindings.sh proves
 * they are current), and hw/SPEC.md describes the protocol on top of it.
 *
 * Rules:
 *  - fixed-width little-endian fields only, explicit padding, reserved words
 *    that must be zero;
 *  - no pointers: every location is an offset from the start of the region
 *    (or of the object that holds it), so every process may map the region at
 *    a different address;
 *  - everything written by one side sits on its own 64-byte cache line.
 *
 * Do NOT change the layout without bumping HWL_ABI_VERSION: it would break
 * every process that already has the region mapped.
 */
#ifndef HWLINK_ABI_H
#define HWLINK_ABI_H

#include <linux/types.h>

/* "HWLINK" followed by 0x00 0x01, read as a little-endian u64. */
#define HWL_REGION_MAGIC 0x01004b4e494c5748ULL
#define HWL_ABI_VERSION 1

/* On device memory (an ivshmem BAR), regions lie back to back from offset 0,
 * each followed by the next at offset + total_size. A creator claims the
 * first free place by a CAS of magic from 0 to this value, then writes the
 * header and stores HWL_REGION_MAGIC. "HWLCLAIM" read as a little-endian u64. */
#define HWL_REGION_CLAIMED 0x4d49414c434c5748ULL

#define HWL_CACHELINE 64          /* alignment of every side-owned word */
#define HWL_REGION_HDR_SIZE 4096  /* sizeof(struct hwl_region) */
#define HWL_OBJ_ALIGN 4096        /* every object starts on a page boundary */
#define HWL_MAX_OBJECTS 32        /* entries in hwl_region.objects */
#define HWL_NAME_LEN 48           /* bytes of a name, NUL-padded */

/* hwl_region.features: what the creator built into the region. An opener
 * refuses a region with a bit it does not know. */
#define HWL_FEAT_SPSC_RING (1U << 0)     /* objects of kind HWL_OBJ_SPSC_RING */
#define HWL_FEAT_FUTEX_DOORBELL (1U << 1) /* doorbells are futex words */

/* hwl_region.flags: facts about the backing memory, set by the creator. */
#define HWL_REGION_F_HUGEPAGE (1U << 0) /* backed by 2 MiB hugepages */
#define HWL_REGION_F_DEVICE (1U << 1)   /* backed by a device BAR */

/* hwl_object.kind */
#define HWL_OBJ_NONE 0
#define HWL_OBJ_SPSC_RING 1

/* hwl_endpoint.state: written only by the endpoint's own process. */
#define HWL_EP_FREE 0     /* nobody attached yet */
#define HWL_EP_ATTACHED 1 /* pid/start_time name a live attachment */
#define HWL_EP_CLOSED 2   /* detached cleanly; never re-attached */

/* hwl_endpoint.doorbell: the endpoint sleeps on an ivshmem MSI-X vector. */
#define HWL_EP_DOORBELL_IVSHMEM (1U << 31)

/* hwl_endpoint.wait_mode: advisory. HWL_WAIT_POLL promises the endpoint
 * never sleeps on a doorbell, so its peer may skip the wake-up check; any
 * other value means it may sleep. Simply an optimization. */
#define HWL_WAIT_MAY_SLEEP 0
#define HWL_WAIT_POLL 1

/* Limits an opener enforces on values read from the region. */
#define HWL_RING_MAX_CAPACITY (1U << 24)  /* slots */
#define HWL_RING_MAX_SLOT_SIZE (1U << 30) /* payload bytes per slot */
#define HWL_SLOT_HDR_SIZE 8               /* sizeof(struct hwl_slot) */

/* One entry of the region's object table. */
struct hwl_object {
	__u32 kind;              /* HWL_OBJ_* */
	__u32 flags;             /* reserved, zero */
	__u64 offset;            /* from region start, HWL_OBJ_ALIGN aligned */
	__u64 size;              /* bytes, offset + size <= total_size */
	__u8 name[HWL_NAME_LEN]; /* object name, NUL-padded */
};

/* The region header, at offset 0 of every region. */
struct hwl_region {
	__u64 magic;              /* HWL_REGION_MAGIC, stored last (release) */
	__u32 abi_version;        /* HWL_ABI_VERSION */
	__u32 features;           /* HWL_FEAT_* */
	__u32 flags;              /* HWL_REGION_F_* */
	__u32 page_size;          /* bytes of one backing page */
	__u64 total_size;         /* bytes of the whole region, = file size */
	__u32 creator_pid;        /* process that created the region */
	__u32 object_count;       /* used entries of objects[] */
	__u64 creator_start_time; /* creator's start time (clock ticks since boot), against pid reuse */
	__u8 name[HWL_NAME_LEN];  /* region name, NUL-padded */
	__u64 resv1[20];          /* reserved, zero */
	struct hwl_object objects[HWL_MAX_OBJECTS]; /* object table */
	__u64 resv2[192];         /* reserved, zero; pads the header to 4096 */
};

/* A counting semaphore on a process-shared futex word. */
struct hwl_doorbell {
	__u32 count;    /* futex word: the semaphore's value */
	__u32 waiters;  /* processes asleep, or about to sleep, on count */
	__u32 resv[14]; /* reserved, zero; pads to one cache line */
};

/* One side of a ring: who is attached, written only by that side. */
struct hwl_endpoint {
	__u32 pid;        /* attached process */
	__u32 state;      /* HWL_EP_*, stored last (release) */
	__u64 start_time; /* the process's start time, against pid reuse */
	__u64 cpu_mask;   /* CPUs 0..63 it may run on, for shared-core detection */
	__u32 wait_mode;  /* HWL_WAIT_*: advisory */
	__u32 doorbell;   /* 0: wake this end through the futex doorbells; else
	                   * HWL_EP_DOORBELL_IVSHMEM | peer << 16 | vector: ring
	                   * that ivshmem doorbell (written at attach) */
};

/*
 * A single-producer single-consumer ring of length-prefixed slots.
 *
 *   line 0   tail         producer writes, consumer reads
 *   line 1   guard        untouched (adjacent-line prefetch)
 *   line 2   head         consumer writes, producer reads
 *   line 3   guard        untouched
 *   line 4   capacity, slot_size, slot_stride, flags, slots_offset
 *            written once by the creator, before the region is published
 *   line 5   producer and consumer endpoints
 *   line 6   not_empty doorbell: the producer posts, the consumer waits
 *   line 7   not_full doorbell: the consumer posts, the producer waits
 *   slots_offset: capacity slots of slot_stride bytes, each a
 *            struct hwl_slot followed by up to slot_size payload bytes
 *
 * head and tail are free-running u32 counters; slot i lives at
 * slots_offset + (i & (capacity - 1)) * slot_stride. The ring holds
 * tail - head (mod 2^32) messages, never more than capacity.
 */
struct hwl_spsc_ring {
	__u32 tail;        /* next slot the producer fills */
	__u32 pad0[15];
	__u8 guard0[HWL_CACHELINE];
	__u32 head;        /* next slot the consumer reads */
	__u32 pad1[15];
	__u8 guard1[HWL_CACHELINE];
	__u32 capacity;    /* slots, a power of two */
	__u32 slot_size;   /* most payload bytes in one slot */
	__u32 slot_stride; /* bytes per slot, header included, multiple of 64 */
	__u32 flags;       /* reserved, zero */
	__u64 slots_offset; /* from the start of this struct, multiple of 64 */
	__u64 resv2[5];    /* reserved, zero */
	struct hwl_endpoint producer; /* the sending side */
	struct hwl_endpoint consumer; /* the receiving side */
	struct hwl_doorbell not_empty; /* posted after publishing messages */
	struct hwl_doorbell not_full;  /* posted after releasing slots */
};

/*
 * The header of one slot; the payload follows it.
 *
 * len and seq are written together, as one little-endian 64-bit store
 * (len in the low half) with release, after the payload, when the message is
 * published; they are read together by one 64-bit load. seq carries the
 * message's position + 1 (mod 2^32). A consumer that polls the slot at its
 * head sees a new message with one cache-line transfer instead of two (tail,
 * then slot). A slot's seq from the previous lap is always different
 * (position + 1 - capacity), and a zero-filled ring is "previous lap" for
 * every position of the first lap.
 */
struct hwl_slot {
	__u32 len; /* payload bytes, <= slot_size */
	__u32 seq; /* position + 1 of the message in this slot, stored last */
};

#endif /* HWLINK_ABI_H */
