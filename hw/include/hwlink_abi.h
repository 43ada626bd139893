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
#define HWL_ABI_VERSION 6

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
#define HWL_FEAT_MPMC_RING (1U << 2)     /* objects of kind HWL_OBJ_MPMC_RING */
#define HWL_FEAT_RENDEZVOUS (1U << 3)    /* objects of kind HWL_OBJ_RENDEZVOUS */
#define HWL_FEAT_MAILBOX (1U << 4)       /* objects of kind HWL_OBJ_MAILBOX */
#define HWL_FEAT_DOMAIN (1U << 5)        /* objects of kind HWL_OBJ_DOMAIN */
#define HWL_FEAT_TOPIC (1U << 6)         /* objects of kind HWL_OBJ_TOPIC */

/* hwl_region.flags: facts about the backing memory, set by the creator. */
#define HWL_REGION_F_HUGEPAGE (1U << 0) /* backed by 2 MiB hugepages */
#define HWL_REGION_F_DEVICE (1U << 1)   /* backed by a device BAR */

/* hwl_object.kind */
#define HWL_OBJ_NONE 0
#define HWL_OBJ_SPSC_RING 1
#define HWL_OBJ_MPMC_RING 2
#define HWL_OBJ_RENDEZVOUS 3 /* struct hwl_rendezvous: zero-capacity hand-off */
#define HWL_OBJ_MAILBOX 4
#define HWL_OBJ_DOMAIN 5 /* struct hwl_domain + its member directory */
#define HWL_OBJ_TOPIC 6  /* struct hwl_topic + subscriber table + slots */

/* hwl_endpoint.state: written only by the endpoint's own process. */
#define HWL_EP_FREE 0     /* nobody attached yet */
#define HWL_EP_ATTACHED 1 /* pid/token name a live attachment */
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

/* hwl_spsc_ring.flags */
#define HWL_RING_PACKED (1U << 0) /* records packed back to back (below) */

/* A packed ring's unit: records start on a multiple of it. */
#define HWL_RECORD_UNIT 16
/* hwl_slot.len of a padding record, which fills the rest of the lap. */
#define HWL_RECORD_PAD 0xFFFFFFFFU

/*
 * A process's liveness file, "hwlink-proc.<token in 8 hex digits>" in the
 * shm directory: one page, written only by its process (and by the kernel
 * when it dies), mapped read-only by every peer. The token (non-zero) names
 * the process in every region it attaches to, whatever its pid namespace.
 *
 * lock is a robust futex word: it holds the tid of the process's liveness
 * thread, which lists it on its robust list (set_robust_list(2)), so the
 * kernel sets HWL_PROCESS_OWNER_DIED in it when the process dies, even by
 * SIGKILL: peers learn of the death from one load. The owner also sets
 * HWL_PROCESS_WAITERS (FUTEX_WAITERS) for good, so that the kernel then
 * wakes a peer sleeping on the word (futex_waitv beside its doorbell); that
 * peer wakes the others. The process also holds
 * an open-file-description write lock (F_OFD_SETLK) on the whole file for
 * its life, which the kernel drops once its last thread is gone: peers
 * that wait check it with F_OFD_GETLK, which no write into shared memory
 * can fake.
 */
#define HWL_PROCESS_MAGIC 0x02434f52504c5748ULL /* "HWLPROC" 0x02, little-endian */
#define HWL_PROCESS_FILE_SIZE 4096
#define HWL_PROCESS_OWNER_DIED (1U << 30) /* FUTEX_OWNER_DIED, set by the kernel */
#define HWL_PROCESS_TID_MASK 0x3fffffffU  /* FUTEX_TID_MASK */
#define HWL_PROCESS_WAITERS (1U << 31)    /* FUTEX_WAITERS, set by the owner */

struct hwl_process {
	__u64 magic;        /* HWL_PROCESS_MAGIC, stored last (release) */
	__u32 abi_version;  /* HWL_ABI_VERSION */
	__u32 token;        /* the token, as in the file name */
	__u32 lock;         /* robust futex word: liveness thread tid | OWNER_DIED */
	__u32 pid;          /* the process in its own pid namespace (informational) */
	__u64 start_time;   /* its start time in clock ticks since boot (informational) */
	__u8 comm[16];      /* its command name, NUL-padded (informational) */
	__u64 resv[2];      /* reserved, zero; pads to one cache line */
};

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
	__u32 creator_pid;        /* process that created the region (informational) */
	__u32 object_count;       /* used entries of objects[] */
	__u32 creator_token;      /* the creator's process token (struct hwl_process) */
	__u32 resv0;              /* reserved, zero */
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
	__u32 pid;        /* attached process (informational: its own pid namespace) */
	__u32 state;      /* HWL_EP_*, stored last (release) */
	__u32 token;      /* the attached process's token (struct hwl_process) */
	__u32 resv0;      /* reserved, zero */
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
 *
 * With HWL_RING_PACKED in flags, the ring is packed instead: capacity
 * counts units of HWL_RECORD_UNIT bytes (slot_stride == HWL_RECORD_UNIT)
 * and head and tail count units. A message of len bytes is one record: a
 * struct hwl_slot (seq = its unit position + 1) and the payload right after
 * it, taking ceil((8 + len) / 16) units, so several small messages share a
 * cache line. A record never wraps: one that would cross the end of the
 * unit area is preceded by a padding record (len HWL_RECORD_PAD) that
 * fills the lap. The producer keeps the header at tail zero (it zeroes the
 * header after its last record before publishing it), so tail - head never
 * exceeds capacity - 1. slot_size bounds len; 2 * ceil((8 + slot_size) /
 * 16) <= capacity. A packed ring also holds at most max_messages
 * messages, whatever their sizes (a bounded buffer of that many): the
 * producer counts the messages it publishes in published, the consumer
 * those it releases in released, and published - released (mod 2^32)
 * never exceeds max_messages. See hw/SPEC.md, "Packed rings".
 */
struct hwl_spsc_ring {
	__u32 tail;        /* next slot the producer fills */
	__u32 published;   /* packed: messages published (free-running) */
	__u32 pad0[14];
	__u8 guard0[HWL_CACHELINE];
	__u32 head;        /* next slot the consumer reads */
	__u32 released;    /* packed: messages released (free-running) */
	__u32 pad1[14];
	__u8 guard1[HWL_CACHELINE];
	__u32 capacity;    /* slots, a power of two */
	__u32 slot_size;   /* most payload bytes in one slot */
	__u32 slot_stride; /* bytes per slot, header included, multiple of 64 */
	__u32 flags;       /* HWL_RING_PACKED or zero; other bits reserved */
	__u64 slots_offset; /* from the start of this struct, multiple of 64 */
	__u32 max_messages; /* packed: most messages held at once; else zero */
	__u32 resv3;        /* reserved, zero */
	__u64 resv2[4];     /* reserved, zero */
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

/*
 * A bounded multi-producer multi-consumer ring of length-prefixed slots
 * (Vyukov's queue: one sequence word per slot).
 *
 *   line 0   enqueue_pos  producers claim a position by CAS
 *   line 1   guard
 *   line 2   dequeue_pos  consumers claim a position by CAS
 *   line 3   guard
 *   line 4   capacity, slot_size, slot_stride, flags, slots_offset,
 *            written once by the creator; next_segment, written once by
 *            the producer that chains a new segment (unbounded queues)
 *   slots_offset: capacity slots of slot_stride bytes, each a
 *            struct hwl_mpmc_slot followed by up to slot_size payload bytes
 *
 * Positions are free-running counters below HWL_MPMC_POS_LIMIT (2^56: 45
 * years at 50 million messages a second), so a slot's sequence word cannot
 * repeat: no ABA. Slot i lives at slots_offset + (pos & (capacity - 1)) *
 * slot_stride. Bit 63 of enqueue_pos (HWL_MPMC_SEALED) closes the ring to
 * producers for good; the rest of the word is then the final position.
 */
#define HWL_MPMC_SEALED (1ULL << 63)    /* in enqueue_pos: no more messages */
/* hwl_mpmc_ring.flags: one producer and one consumer (a direction of a
 * domain link): the solo protocol of hw/SPEC.md §9, "Solo rings", in which nobody
 * holds a slot, the consumer never writes a slot, and dequeue_pos moves
 * after the message is read. Every segment of a queue has the same. */
#define HWL_MPMC_SOLO (1U << 0)
#define HWL_MPMC_SLOT_HDR_SIZE 16       /* sizeof(struct hwl_mpmc_slot) */
#define HWL_MPMC_POS_LIMIT (1ULL << 56) /* positions (and turns) stay below */

/* hwl_mpmc_slot.seq: a plain turn (tag 0) or, while a party holds the
 * slot, tag | owner << 56 | pos, where owner is the attachment entry
 * (hwl_mailbox.attachments) of the process that holds it. */
#define HWL_MPMC_SEQ_TAG_MASK (3ULL << 62)
#define HWL_MPMC_SEQ_WRITING (1ULL << 62) /* a producer copies the message of pos */
#define HWL_MPMC_SEQ_READING (2ULL << 62) /* a consumer reads the message of pos */
#define HWL_MPMC_SEQ_VOID (3ULL << 62)    /* pos carries no message: its producer died */
#define HWL_MPMC_SEQ_OWNER_SHIFT 56
#define HWL_MPMC_SEQ_OWNER_MASK (63ULL << 56)

struct hwl_mpmc_ring {
	__u64 enqueue_pos;  /* next position a producer claims; bit 63: sealed */
	__u64 pad0[7];
	__u8 guard0[HWL_CACHELINE];
	__u64 dequeue_pos;  /* next position a consumer claims */
	__u64 pad1[7];
	__u8 guard1[HWL_CACHELINE];
	__u32 capacity;     /* slots, a power of two */
	__u32 slot_size;    /* most payload bytes in one slot */
	__u32 slot_stride;  /* bytes per slot, header included, multiple of 64 */
	__u32 flags;        /* HWL_MPMC_SOLO or zero; other bits reserved */
	__u64 slots_offset; /* from the start of this struct, multiple of 64 */
	__u64 segment;      /* this ring's segment number in its queue (0: first) */
	__u64 next_segment; /* segment that follows this one, 0: none yet; set once */
	__u64 resv[11];     /* reserved, zero; pads to six cache lines */
};

/*
 * The header of one MPMC slot. seq holds the slot's turn XOR the slot's index
 * (so that zero-filled slots are a new ring: slot i, turn i; ABI 5). The turn
 * is pos when position pos
 * may be written, WRITING | owner | pos while its producer copies the
 * message, pos + 1 once it is published, READING | owner | pos while a
 * consumer reads it, and pos + capacity once it has been consumed (the next
 * lap's "may be written"). VOID | pos marks a position whose producer died
 * while writing: consumers step over it. len and sender are written before
 * seq (release).
 */
struct hwl_mpmc_slot {
	__u64 seq;    /* the slot's turn, see above */
	__u32 len;    /* payload bytes, <= slot_size */
	__u32 sender; /* the producer's attachment number (informational) */
};

/* hwl_mailbox.buffering */
#define HWL_BUF_ZERO 0      /* rendezvous: send returns once received */
#define HWL_BUF_BOUNDED 1   /* one MPMC ring of capacity slots */
#define HWL_BUF_UNBOUNDED 2 /* a chain of MPMC ring segments, up to byte_limit */

/* hwl_mailbox.access and hwl_attachment.mode */
#define HWL_ACCESS_SEND (1U << 0) /* may send to the mailbox */
#define HWL_ACCESS_RECV (1U << 1) /* may receive from the mailbox */

#define HWL_MAX_ATTACHMENTS 64 /* entries in hwl_mailbox.attachments */

/* One process attached to a mailbox; written only by that process (or by
 * whoever reaps it after it died). */
struct hwl_attachment {
	__u32 pid;        /* attached process, 0: free entry (claimed by CAS) */
	__u32 mode;       /* HWL_ACCESS_* it attached with */
	__u32 token;      /* the attached process's token (struct hwl_process) */
	__u32 resv0;      /* reserved, zero */
};

/*
 * A mailbox: an indirect link many processes attach to. The region holding
 * it has this object first and its queue second: an MPMC ring
 * (HWL_BUF_BOUNDED, and segment 0 of HWL_BUF_UNBOUNDED) or a rendezvous
 * object (HWL_BUF_ZERO). Segments 1, 2, ... of an unbounded mailbox are
 * regions of their own, named "<mailbox region>.s<segment>", each holding
 * one MPMC ring.
 *
 *   line 0   id and configuration, written once by the creator
 *   line 1   chain state of an unbounded mailbox
 *   line 2   removed flag
 *   line 3   not_empty doorbell: producers post, consumers wait
 *   line 4   not_full doorbell: consumers post, producers wait
 *   line 5-  attachment table
 */
struct hwl_mailbox {
	__u64 id;           /* unique id, chosen at random by the creator */
	__u32 buffering;    /* HWL_BUF_* */
	__u32 access;       /* HWL_ACCESS_* bits an opener may ask for */
	__u32 capacity;     /* slots of the (first) ring */
	__u32 slot_size;    /* most payload bytes in one message */
	__u64 byte_limit;   /* HWL_BUF_UNBOUNDED: most bytes of all segments */
	__u64 resv0[4];     /* reserved, zero */
	__u64 bytes_in_use; /* bytes of the live segments, segment 0 included */
	__u64 last_segment; /* highest segment number handed out */
	__u64 head_segment; /* oldest segment not yet drained and removed */
	__u64 tail_segment; /* newest segment linked into the chain */
	__u64 spare_segment; /* created ahead, not linked yet; 0: none */
	__u64 resv1[3];     /* reserved, zero */
	__u32 removed;      /* non-zero once the mailbox has been removed */
	__u32 resv2[15];    /* reserved, zero */
	struct hwl_doorbell not_empty; /* posted after publishing messages */
	struct hwl_doorbell not_full;  /* posted after consuming messages */
	struct hwl_attachment attachments[HWL_MAX_ATTACHMENTS];
};

/*
 * Domains: a directory of member processes that talk to each other by name
 * over automatically created links (hw/SPEC.md, "Domains").
 */
#define HWL_DOMAIN_MAX_MEMBERS 64 /* entries; one bit each in pending_links */
#define HWL_MEMBER_NAME_LEN 32    /* bytes of a member name, NUL-padded */

/* hwl_domain.buffering: how each direction of a link queues messages. */
#define HWL_DOMAIN_BUF_BOUNDED 1   /* one SPSC ring of capacity slots */
#define HWL_DOMAIN_BUF_ZERO 2      /* a rendezvous per direction */
#define HWL_DOMAIN_BUF_UNBOUNDED 3 /* a chain of MPMC segments per direction */

/* hwl_domain.state */
#define HWL_DOMAIN_OPEN 0    /* members may join */
#define HWL_DOMAIN_CLOSING 1 /* the last member is checking it is the last */
#define HWL_DOMAIN_CLOSED 2  /* empty for good; its file is being removed */

/* hwl_member.state: low half of the 64-bit word (state | generation << 32) */
#define HWL_MEMBER_FREE 0    /* unused (pid != 0: being claimed) */
#define HWL_MEMBER_JOINING 1 /* name written; checking it is unique */
#define HWL_MEMBER_ACTIVE 2  /* a member: others may link to it */
#define HWL_MEMBER_LEAVING 3 /* left or died: its links are being removed */

/*
 * The head of a domain object, followed at members_offset by max_members
 * struct hwl_member entries.
 *
 *   line 0   configuration, written once by the creator before R-mag
 *   line 1   state and next_generation, updated by joiners and leavers
 */
struct hwl_domain {
	__u32 max_members;     /* entries in the directory, 1..HWL_DOMAIN_MAX_MEMBERS */
	__u32 buffering;       /* HWL_DOMAIN_BUF_* of every link */
	__u32 capacity;        /* slots per direction (bounded), a power of two */
	__u32 slot_size;       /* largest message in bytes */
	__u64 byte_limit;      /* unbounded: bytes queued per direction; else 0 */
	__u64 members_offset;  /* from the start of this struct, multiple of 64, >= 128 */
	__u32 flags;           /* reserved, zero */
	__u32 resv0;           /* reserved, zero */
	__u64 resv1[3];        /* reserved, zero */
	__u32 state;           /* HWL_DOMAIN_OPEN / CLOSING / CLOSED */
	__u32 next_generation; /* fetch_add by every joiner; never 0 in an entry */
	__u64 resv2[7];        /* reserved, zero */
};

/*
 * One entry of the member directory: two cache lines.
 *
 *   line 0   state|generation (one 64-bit word), pid, token,
 *            pending_links, name: written by the member (joining, leaving)
 *            or by a reaper; pending_links by peers (fetch_or)
 *   line 1   inbox doorbell: peers post after publishing to this member
 */
struct hwl_member {
	__u32 state;          /* HWL_MEMBER_*; with generation one u64, stored last */
	__u32 generation;     /* join generation, unique within the domain */
	__u32 pid;            /* claiming / owning process; 0 = free slot */
	__u32 reaper;         /* token of the process tearing a LEAVING entry down; else 0 */
	__u32 token;          /* the owning process's token (struct hwl_process) */
	__u32 resv0;          /* reserved, zero */
	__u64 pending_links;  /* bit j: member j created or opened a link to us */
	__u8 name[HWL_MEMBER_NAME_LEN]; /* member name, NUL-padded */
	struct hwl_doorbell inbox; /* recv_any sleeps here */
};

/*
 * Rendezvous (zero-capacity) hand-off: many senders, many receivers, no
 * buffering. A send returns only after a receiver has taken the message.
 *
 *   line 0   cells, slot_size, cell_stride, flags, cells_offset
 *            written once by the creator, before the region is published
 *   line 1   next_ticket: FIFO order of postings and registrations
 *   line 2   cells_bell doorbell: posted when a cell is freed, a message
 *            is posted or a receiver registers; waited on only while every
 *            cell is busy
 *   line 3+  state[HWL_RDV_MAX_CELLS]: one 64-bit state word per cell,
 *            HWL_RDV_* in the low 32 bits, a process token in the high 32 bits;
 *            changed only by compare-exchange (hw/SPEC.md, "Rendezvous")
 *   cells_offset: cells cells of cell_stride bytes, each a
 *            struct hwl_rdv_cell followed by up to slot_size payload bytes
 */
#define HWL_RDV_MAX_CELLS 64     /* most cells of one rendezvous object */
#define HWL_RDV_CELL_HDR_SIZE 64 /* sizeof(struct hwl_rdv_cell) */

/* hwl_rendezvous.state[i], low 32 bits; the high 32 bits name a process by
 * its token (see hw/SPEC.md for whose). */
#define HWL_RDV_FREE 0         /* unused; high half 0 */
#define HWL_RDV_CLAIMED 1      /* owner (token) is writing its cell header */
#define HWL_RDV_RECV_WAITING 2 /* owner (token), a receiver, waits for a message */
#define HWL_RDV_FILLING 3      /* sender (token) copies its message into it */
#define HWL_RDV_FILLED 4       /* sender (token)'s message is complete */
#define HWL_RDV_READING 5      /* the owner reads the message of sender (token) */
#define HWL_RDV_ACKED 6        /* the owner has received it; sender (token) frees */
#define HWL_RDV_SEND_WAITING 7 /* owner (token), a sender, offers its message */
#define HWL_RDV_TAKING 8       /* receiver (token) reads the owner's message */
#define HWL_RDV_TAKEN 9        /* receiver (token) has received it; owner frees */

struct hwl_rendezvous {
	__u32 cells;        /* cells in use, 1..HWL_RDV_MAX_CELLS */
	__u32 slot_size;    /* most payload bytes in one cell */
	__u32 cell_stride;  /* bytes per cell, header included, multiple of 64 */
	__u32 flags;        /* reserved, zero */
	__u64 cells_offset; /* from the start of this struct, multiple of 64 */
	__u64 resv0[5];     /* reserved, zero */
	__u32 next_ticket;  /* fetch-add by every posting / registration */
	__u32 pad1[15];
	struct hwl_doorbell cells_bell; /* a cell became free or useful */
	__u64 state[HWL_RDV_MAX_CELLS]; /* per-cell state words */
};

/* The header of one rendezvous cell; the payload follows it. The owner
 * writes owner and ticket while the cell is CLAIMED; len is written by
 * whoever writes the payload. */
struct hwl_rdv_cell {
	__u32 owner;         /* token of the process that claimed the cell */
	__u32 len;           /* payload bytes, <= slot_size */
	__u64 resv2;         /* reserved, zero */
	__u32 ticket;        /* next_ticket value taken when it was posted */
	__u32 resv0;         /* reserved, zero */
	__u32 owner_count;   /* futex word the owner sleeps on (doorbell count) */
	__u32 owner_waiters; /* doorbell waiters of owner_count */
	__u32 peer_count;    /* futex word a paired sender sleeps on for the ack */
	__u32 peer_waiters;  /* doorbell waiters of peer_count */
	__u64 resv1[3];      /* reserved, zero */
};

/*
 * Topics: one publisher, many subscribers, every message read in place by
 * every subscriber (hw/SPEC.md, "Topics"). One ring of slots, written only
 * by the publisher; each subscriber has its own cursor.
 *
 *   line 0   configuration, written once by the creator before R-mag
 *   line 1   tail and reclaim: written by the publisher
 *   line 2   publisher: token (claimed by CAS), pid, wait mode, CPU mask
 *   line 3   users (reference count), sleepy, removed: updated by joiners
 *            and leavers
 *   line 4   sleeping and attached: one bit per subscriber entry each,
 *            set and cleared by that entry's subscriber (or its reaper)
 *   line 5   not_full doorbell: subscribers post, a Block publisher waits
 *   subs_offset: max_subscribers struct hwl_topic_sub entries
 *   slots_offset: capacity slots of slot_stride bytes, each a
 *            struct hwl_topic_slot followed by up to slot_size payload bytes
 *
 * Positions are free-running u64 counters below HWL_TOPIC_POS_LIMIT; the
 * message of position p lives in slot p & (capacity - 1).
 */
#define HWL_TOPIC_MAX_SUBSCRIBERS 256 /* entries; one bit each in sleeping */
#define HWL_TOPIC_SLOT_HDR_SIZE 16    /* sizeof(struct hwl_topic_slot) */
#define HWL_TOPIC_POS_LIMIT (1ULL << 62)
#define HWL_TOPIC_SEQ_WRITING (1ULL << 63) /* in seq: the publisher is writing pos */

/* hwl_topic.backpressure */
#define HWL_TOPIC_BLOCK 0     /* the publisher waits for the slowest live subscriber */
#define HWL_TOPIC_OVERWRITE 1 /* the publisher never waits; laggards are told how many they missed */

struct hwl_topic {
	__u64 id;              /* unique id, chosen at random by the creator */
	__u32 capacity;        /* slots, a power of two, 2..HWL_RING_MAX_CAPACITY */
	__u32 slot_size;       /* most payload bytes in one message */
	__u32 slot_stride;     /* bytes per slot, header included, multiple of 64 */
	__u32 max_subscribers; /* entries, 1..HWL_TOPIC_MAX_SUBSCRIBERS */
	__u32 history;         /* most past messages a joiner may ask for, <= capacity / 2 */
	__u32 backpressure;    /* HWL_TOPIC_BLOCK or HWL_TOPIC_OVERWRITE */
	__u64 subs_offset;     /* from the start of this struct, multiple of 64 */
	__u64 slots_offset;    /* from the start of this struct, multiple of 64 */
	__u64 resv0[2];        /* reserved, zero */
	__u64 tail;            /* next position the publisher writes */
	__u64 reclaim;         /* Block: positions below may be overwritten */
	__u64 pad1[6];
	__u32 publisher;       /* token of the attached publisher, 0: none (CAS) */
	__u32 publisher_pid;   /* its pid (informational) */
	__u32 publisher_wait;  /* HWL_WAIT_*: advisory */
	__u32 resv1;           /* reserved, zero */
	__u64 publisher_cpus;  /* CPUs 0..63 it may run on */
	__u64 pad2[5];
	__u32 users;           /* attached handles; 0: being removed (never raised from 0) */
	__u32 sleepy;          /* attached subscribers that may park */
	__u32 removed;         /* non-zero once removed by `hwlink rm` */
	__u32 pad3[13];
	__u64 sleeping[HWL_TOPIC_MAX_SUBSCRIBERS / 64]; /* bit i: entry i may be parked */
	__u64 attached[HWL_TOPIC_MAX_SUBSCRIBERS / 64]; /* bit i: entry i is claimed (a hint) */
	struct hwl_doorbell not_full; /* posted after a cursor moves, while the publisher waits */
};

/*
 * One subscriber entry: two cache lines.
 *
 *   line 0   cursor, token, pid, lagged: written by the subscriber (token
 *            claimed by CAS; cleared by whoever reaps a dead subscriber)
 *   line 1   bell: the publisher posts when the entry's sleeping bit is set
 */
struct hwl_topic_sub {
	__u64 cursor;   /* next position the subscriber reads */
	__u32 token;    /* the subscriber's process token, 0: free entry */
	__u32 pid;      /* its pid (informational) */
	__u64 lagged;   /* messages it missed in all (Overwrite; informational) */
	__u64 resv0[5]; /* reserved, zero */
	struct hwl_doorbell bell; /* the subscriber parks here */
};

/*
 * The header of one topic slot; the payload follows it. seq is
 * HWL_TOPIC_SEQ_WRITING | pos while the publisher writes the message of pos,
 * and pos + 1 once it is complete (stored last, release). len is written
 * before seq. A reader checks seq before and after copying (a seqlock).
 */
struct hwl_topic_slot {
	__u64 seq; /* see above; 0: never written */
	__u32 len; /* payload bytes, <= slot_size */
	__u32 resv; /* reserved, zero */
};

#endif /* HWLINK_ABI_H */
