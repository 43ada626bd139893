//! Typed messages: a plain-data value copied straight into or out of a
//! slot (one copy, no serialization), its type checked at compile time by
//! [`zerocopy`]'s traits and its length validated on receipt; and, with the
//! `serde` feature, any serde type encoded with postcard.
//!
//! Every end that moves bytes gets the same methods from the two macros
//! here, given its one byte-level send and receive: `typed_send_forms!`
//! (`send_value`, `try_send_value`, `send_value_timeout` and, with `serde`,
//! the `send_serialized` forms) and `typed_recv_forms!` (`recv_value`-style
//! and `recv_deserialized`-style forms under the names it is given). Links,
//! mailboxes and domain members use them; a new kind of end adds the same
//! few lines. The typed loan of a link slot is [`ValueSlot`].
//!
//! Shared memory is untrusted (hw/SPEC.md §8.7): no `&T` ever points into
//! a slot. A value is sent as a copy of its bytes
//! ([`IntoBytes::as_bytes`]), and received by copying the message into a
//! zeroed local `T` (properly aligned, so alignment is never a question)
//! once its length is found to be exactly `size_of::<T>()`. Any bytes make
//! a valid `T` ([`FromBytes`]), so a torn or hostile message spoils the
//! value, never memory safety.
//!
//! ```no_run
//! use hwlink::zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
//! use hwlink::LinkBuilder;
//!
//! // Both processes use the same struct: `#[repr(C)]`, no padding, and
//! // zerocopy's derives (add `zerocopy = { version = "0.8", features =
//! // ["derive"] }` to Cargo.toml).
//! #[derive(Clone, Copy, Debug, PartialEq, FromBytes, IntoBytes, Immutable, KnownLayout)]
//! #[repr(C)]
//! struct Tick {
//!     instrument: u64,
//!     price: i64,
//!     quantity: u32,
//!     side: u32,
//! }
//!
//! // Process A.
//! let mut tx = LinkBuilder::new("ticks").slot_size(64).create_sender()?;
//! tx.send_value(&Tick { instrument: 7, price: 10_125, quantity: 300, side: 1 })?;
//! // Or written in place, field by field.
//! let mut slot = tx.reserve_value::<Tick>()?;
//! slot.write(&Tick { instrument: 7, price: 10_130, quantity: 100, side: 2 });
//! slot.write_field_at(core::mem::offset_of!(Tick, quantity), &200u32);
//! slot.commit();
//!
//! // Process B.
//! let mut rx = LinkBuilder::new("ticks").open_receiver()?;
//! let tick: Tick = rx.recv_value()?; // a copy, its length checked
//! assert_eq!(tick.instrument, 7);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(clippy::arithmetic_side_effects)]

use crate::error::RecvError;
use crate::link::WriteSlot;
use crate::shm::{ShmSlice, ShmSliceMut};
use core::marker::PhantomData;
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// Copies a message into `value` if its length is exactly `T`'s size;
/// else returns the message's length (nothing copied).
///
/// `T: FromBytes` makes any bytes a valid `T`; `T: IntoBytes` (no padding)
/// lets the copy go straight into the value's own bytes. The value is the
/// caller's local `T`, aligned as `T` must be, so the slot's alignment
/// does not matter. The receive forms give the closure that calls this a
/// `&mut` to their own value, so that the value is written once, where it
/// is returned from, rather than moved out through layers of results.
#[inline(always)]
pub(crate) fn copy_value<T: FromBytes + IntoBytes>(
    m: ShmSlice<'_>,
    value: &mut T,
) -> Result<(), usize> {
    let bytes = value.as_mut_bytes();
    if m.len() != bytes.len() {
        return Err(m.len());
    }
    m.copy_to(bytes);
    Ok(())
}

/// A message copied into a new `T` (see [`copy_value`]), or
/// [`RecvError::WrongSize`].
pub(crate) fn decode<T: FromBytes + IntoBytes>(m: ShmSlice<'_>) -> Result<T, RecvError> {
    let mut value = T::new_zeroed();
    copy_value(m, &mut value).map_err(wrong_size::<T>)?;
    Ok(value)
}

/// The error for a message of `len` bytes received as a `T`.
#[cold]
fn wrong_size<T>(len: usize) -> RecvError {
    RecvError::WrongSize {
        len,
        expected: core::mem::size_of::<T>(),
    }
}

/// What a byte-level receive returned once its closure handled the
/// message (alone, or with the sender's name: `recv_any`), turned into
/// the typed receive's result, given the value the closure wrote (`V =
/// T`: the closure returned [`copy_value`]'s result) or none (`V = ()`:
/// the closure returned the decoded value itself).
pub(crate) trait Decoded<V> {
    /// What the typed receive returns.
    type Out;
    /// The receive's result, or the closure's error.
    fn place(self, value: V) -> Result<Self::Out, RecvError>;
}

impl<T> Decoded<T> for Result<(), usize> {
    type Out = T;
    #[inline(always)]
    fn place(self, value: T) -> Result<T, RecvError> {
        match self {
            Ok(()) => Ok(value),
            Err(len) => Err(wrong_size::<T>(len)),
        }
    }
}

impl<T> Decoded<T> for (String, Result<(), usize>) {
    type Out = (String, T);
    fn place(self, value: T) -> Result<(String, T), RecvError> {
        let (from, fit) = self;
        Ok((from, fit.place(value)?))
    }
}

impl<T> Decoded<()> for Result<T, RecvError> {
    type Out = T;
    fn place(self, (): ()) -> Result<T, RecvError> {
        self
    }
}

impl<T> Decoded<()> for (String, Result<T, RecvError>) {
    type Out = (String, T);
    fn place(self, (): ()) -> Result<(String, T), RecvError> {
        let (from, value) = self;
        Ok((from, value?))
    }
}

/// The typed send forms of an end, over its one byte-level
/// `$raw($args.., msg, Patience) -> Result<(), SendError<M>>` (the
/// `send_deadline` every flavour has): `send_value`, `try_send_value`,
/// `send_value_timeout`, and with the `serde` feature `send_serialized`,
/// `try_send_serialized`, `send_serialized_timeout`. The byte forms they
/// mirror (`send`, `try_send`, `send_timeout`, taking the same `$args`)
/// document the waiting and the errors.
macro_rules! typed_send_forms {
    ($raw:ident($($arg:ident: $argty:ty),*)) => {
        /// [`send`](Self::send) for a plain-data value: a copy of its bytes
        /// goes into the slot (one copy, no serialization), waiting per the
        /// wait strategy for room. The receiver takes it as the same type
        /// (`recv_value`).
        ///
        /// `T: IntoBytes` (no padding, so every byte sent is initialised)
        /// and `Immutable` (no interior mutability, so the bytes can be
        /// borrowed): derive them, with `FromBytes` and `KnownLayout`, on a
        /// `#[repr(C)]` struct (see [`crate::zerocopy`]). `T` may be
        /// unsized (`[u32]`, a slice of structs). The value stays the
        /// caller's, so errors carry no message.
        pub fn send_value<T: ?Sized + ::zerocopy::IntoBytes + ::zerocopy::Immutable>(
            &mut self,
            $($arg: $argty,)*
            value: &T,
        ) -> Result<(), crate::SendError<()>> {
            self.$raw($($arg,)* ::zerocopy::IntoBytes::as_bytes(value), crate::wait::Patience::new(None, true))
                .map_err(crate::SendError::without_msg)
        }
        /// [`try_send`](Self::try_send) for a plain-data value (see
        /// [`send_value`](Self::send_value)): `Full` at once if there is no
        /// room now.
        pub fn try_send_value<T: ?Sized + ::zerocopy::IntoBytes + ::zerocopy::Immutable>(
            &mut self,
            $($arg: $argty,)*
            value: &T,
        ) -> Result<(), crate::SendError<()>> {
            self.$raw($($arg,)* ::zerocopy::IntoBytes::as_bytes(value), crate::wait::Patience::new(None, false))
                .map_err(crate::SendError::without_msg)
        }
        /// [`send_timeout`](Self::send_timeout) for a plain-data value (see
        /// [`send_value`](Self::send_value)): waits at most `timeout` for
        /// room.
        pub fn send_value_timeout<T: ?Sized + ::zerocopy::IntoBytes + ::zerocopy::Immutable>(
            &mut self,
            $($arg: $argty,)*
            value: &T,
            timeout: std::time::Duration,
        ) -> Result<(), crate::SendError<()>> {
            let deadline = crate::wait::deadline_after(timeout);
            self.$raw($($arg,)* ::zerocopy::IntoBytes::as_bytes(value), crate::wait::Patience::new(deadline, true))
                .map_err(crate::SendError::without_msg)
        }

        /// [`send`](Self::send) for any serde value, encoded with postcard
        /// into a scratch buffer of this thread (reused: no allocation once
        /// it is large enough), then sent as bytes. Fails with
        /// [`SendError::Serialize`](crate::SendError::Serialize) if postcard cannot encode it, and with
        /// [`SendError::TooLarge`](crate::SendError::TooLarge) (the encoded length) if it does not fit
        /// a slot. The receiver takes it with `recv_deserialized`. Feature
        /// `serde`.
        #[cfg(feature = "serde")]
        pub fn send_serialized<T: ?Sized + ::serde::Serialize>(
            &mut self,
            $($arg: $argty,)*
            value: &T,
        ) -> Result<(), crate::SendError<()>> {
            crate::typed::serialized(value, |bytes| {
                self.$raw($($arg,)* bytes, crate::wait::Patience::new(None, true))
                    .map_err(crate::SendError::without_msg)
            })
        }
        /// [`try_send`](Self::try_send) for any serde value (see
        /// [`send_serialized`](Self::send_serialized)). Feature `serde`.
        #[cfg(feature = "serde")]
        pub fn try_send_serialized<T: ?Sized + ::serde::Serialize>(
            &mut self,
            $($arg: $argty,)*
            value: &T,
        ) -> Result<(), crate::SendError<()>> {
            crate::typed::serialized(value, |bytes| {
                self.$raw($($arg,)* bytes, crate::wait::Patience::new(None, false))
                    .map_err(crate::SendError::without_msg)
            })
        }
        /// [`send_timeout`](Self::send_timeout) for any serde value (see
        /// [`send_serialized`](Self::send_serialized)). Feature `serde`.
        #[cfg(feature = "serde")]
        pub fn send_serialized_timeout<T: ?Sized + ::serde::Serialize>(
            &mut self,
            $($arg: $argty,)*
            value: &T,
            timeout: std::time::Duration,
        ) -> Result<(), crate::SendError<()>> {
            let deadline = crate::wait::deadline_after(timeout);
            crate::typed::serialized(value, |bytes| {
                self.$raw($($arg,)* bytes, crate::wait::Patience::new(deadline, true))
                    .map_err(crate::SendError::without_msg)
            })
        }
    };
}

/// The typed receive forms of an end, over its one byte-level
/// `$raw($args.., f, Patience) -> Result<X, RecvError>`, where `f` gets
/// the message in place ([`ShmSlice`]) and `X` is what `f` returned, or
/// that with the sender's name (`-> (String, T)`, see [`Decoded`]). `f`
/// is called for one message at most. Each
/// emitted form is named with the byte form it mirrors (`name = bytes`),
/// whose doc tells the waiting, the arguments and the errors; the serde
/// forms are emitted with the `serde` feature only.
macro_rules! typed_recv_forms {
    (
        $raw:ident($($arg:ident: $argty:ty),*) -> $out:ty;
        $recv:ident = $b_recv:ident,
        $try_recv:ident = $b_try_recv:ident,
        $recv_timeout:ident = $b_recv_timeout:ident;
        $de:ident, $try_de:ident, $de_timeout:ident;
    ) => {
        #[doc = concat!("[`", stringify!($b_recv), "`](Self::", stringify!($b_recv), ")")]
        /// for a plain-data value: the message is copied into a new `T`
        /// once its length is found to be exactly `size_of::<T>()` (else
        /// [`RecvError::WrongSize`](crate::RecvError::WrongSize): the message is consumed, and the next
        /// receive takes the next one). No allocation, no reference into
        /// shared memory.
        ///
        /// `T: FromBytes` (any bytes are a valid `T`: a peer cannot make an
        /// invalid value) and `IntoBytes` (no padding: the copy goes
        /// straight into the value's bytes); derive them, with `Immutable`
        /// and `KnownLayout`, on a `#[repr(C)]` struct (see
        /// [`crate::zerocopy`]).
        pub fn $recv<T: ::zerocopy::FromBytes + ::zerocopy::IntoBytes>(
            &mut self,
            $($arg: $argty),*
        ) -> Result<$out, crate::RecvError> {
            let mut value = <T as ::zerocopy::FromZeros>::new_zeroed();
            let got = self.$raw(
                $($arg,)*
                |m| crate::typed::copy_value(m, &mut value),
                crate::wait::Patience::new(None, true),
            )?;
            crate::typed::Decoded::place(got, value)
        }
        #[doc = concat!("[`", stringify!($b_try_recv), "`](Self::", stringify!($b_try_recv), ")")]
        #[doc = concat!("for a plain-data value (see [`", stringify!($recv), "`](Self::", stringify!($recv), ")).")]
        pub fn $try_recv<T: ::zerocopy::FromBytes + ::zerocopy::IntoBytes>(
            &mut self,
            $($arg: $argty),*
        ) -> Result<$out, crate::RecvError> {
            let mut value = <T as ::zerocopy::FromZeros>::new_zeroed();
            let got = self.$raw(
                $($arg,)*
                |m| crate::typed::copy_value(m, &mut value),
                crate::wait::Patience::new(None, false),
            )?;
            crate::typed::Decoded::place(got, value)
        }
        #[doc = concat!("[`", stringify!($b_recv_timeout), "`](Self::", stringify!($b_recv_timeout), ")")]
        #[doc = concat!("for a plain-data value (see [`", stringify!($recv), "`](Self::", stringify!($recv), ")).")]
        pub fn $recv_timeout<T: ::zerocopy::FromBytes + ::zerocopy::IntoBytes>(
            &mut self,
            $($arg: $argty,)*
            timeout: std::time::Duration,
        ) -> Result<$out, crate::RecvError> {
            let deadline = crate::wait::deadline_after(timeout);
            let mut value = <T as ::zerocopy::FromZeros>::new_zeroed();
            let got = self.$raw(
                $($arg,)*
                |m| crate::typed::copy_value(m, &mut value),
                crate::wait::Patience::new(deadline, true),
            )?;
            crate::typed::Decoded::place(got, value)
        }

        #[doc = concat!("[`", stringify!($b_recv), "`](Self::", stringify!($b_recv), ")")]
        /// for a value sent with `send_serialized`: the message is copied
        /// into a scratch buffer of this thread and decoded with postcard;
        /// [`RecvError::Deserialize`](crate::RecvError::Deserialize) if it is not exactly one `T` (the
        /// message is consumed, and the next receive takes the next one).
        /// Feature `serde`.
        #[cfg(feature = "serde")]
        pub fn $de<T: ::serde::de::DeserializeOwned>(
            &mut self,
            $($arg: $argty),*
        ) -> Result<$out, crate::RecvError> {
            let got = self.$raw(
                $($arg,)*
                crate::typed::deserialize::<T>,
                crate::wait::Patience::new(None, true),
            )?;
            crate::typed::Decoded::place(got, ())
        }
        #[doc = concat!("[`", stringify!($b_try_recv), "`](Self::", stringify!($b_try_recv), ")")]
        #[doc = concat!("for a serialized value (see [`", stringify!($de), "`](Self::", stringify!($de), ")). Feature `serde`.")]
        #[cfg(feature = "serde")]
        pub fn $try_de<T: ::serde::de::DeserializeOwned>(
            &mut self,
            $($arg: $argty),*
        ) -> Result<$out, crate::RecvError> {
            let got = self.$raw(
                $($arg,)*
                crate::typed::deserialize::<T>,
                crate::wait::Patience::new(None, false),
            )?;
            crate::typed::Decoded::place(got, ())
        }
        #[doc = concat!("[`", stringify!($b_recv_timeout), "`](Self::", stringify!($b_recv_timeout), ")")]
        #[doc = concat!("for a serialized value (see [`", stringify!($de), "`](Self::", stringify!($de), ")). Feature `serde`.")]
        #[cfg(feature = "serde")]
        pub fn $de_timeout<T: ::serde::de::DeserializeOwned>(
            &mut self,
            $($arg: $argty,)*
            timeout: std::time::Duration,
        ) -> Result<$out, crate::RecvError> {
            let deadline = crate::wait::deadline_after(timeout);
            let got = self.$raw(
                $($arg,)*
                crate::typed::deserialize::<T>,
                crate::wait::Patience::new(deadline, true),
            )?;
            crate::typed::Decoded::place(got, ())
        }
    };
}

/// A link slot reserved for one `T`
/// ([`Sender::reserve_value`](crate::Sender::reserve_value)), written in
/// place by copy (never through a `&mut T` into shared memory) and sent by
/// [`commit`](Self::commit); dropped uncommitted, nothing is sent.
///
/// Bytes not written hold whatever the slot held before (an earlier
/// message): write the whole value, or [`zero`](Self::zero) it first and
/// then write fields.
#[derive(Debug)]
pub struct ValueSlot<'a, T> {
    slot: WriteSlot<'a>,
    _value: PhantomData<fn(&T)>,
}

impl<'a, T> ValueSlot<'a, T> {
    /// Wraps a slot reserved for exactly `size_of::<T>()` bytes.
    pub(crate) fn new(slot: WriteSlot<'a>) -> Self {
        debug_assert_eq!(slot.len(), core::mem::size_of::<T>());
        ValueSlot {
            slot,
            _value: PhantomData,
        }
    }

    /// The slot's bytes, to write in place (by copy: see [`ShmSliceMut`]).
    pub fn bytes_mut(&mut self) -> ShmSliceMut<'_> {
        self.slot.bytes_mut()
    }

    /// Sets every byte of the value to zero.
    pub fn zero(&mut self) {
        self.slot.bytes_mut().fill(0);
    }

    /// Copies `field`'s bytes to `offset` of the value (e.g.
    /// `core::mem::offset_of!(T, field)`); false (nothing written) if they
    /// do not fit inside `T`. The field's type need not be `T`'s field's
    /// type: the receiver sees the bytes.
    pub fn write_field_at<F: ?Sized + IntoBytes + Immutable>(
        &mut self,
        offset: usize,
        field: &F,
    ) -> bool {
        self.slot.write_at(offset, field.as_bytes())
    }

    /// Publishes the value.
    pub fn commit(self) {
        self.slot.commit()
    }
}

impl<T: IntoBytes + Immutable> ValueSlot<'_, T> {
    /// Copies the whole of `value` into the slot (one copy).
    pub fn write(&mut self, value: &T) {
        self.slot.copy_from(value.as_bytes());
    }
}

/// With the `serde` feature: postcard through one scratch buffer per
/// thread, so that a serialized send or receive allocates only while the
/// buffer grows.
#[cfg(feature = "serde")]
mod serialized {
    use crate::error::{RecvError, SendError};
    use crate::shm::ShmSlice;
    use std::cell::Cell;

    /// Largest scratch buffer kept for the next message; a larger one (a
    /// rare huge message) is freed after use.
    const SCRATCH_KEEP: usize = 1 << 20;

    thread_local! {
        static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    }

    /// Runs `f` on this thread's scratch buffer, cleared. Taken out of its
    /// cell meanwhile, so a nested use gets a fresh one instead of a
    /// borrow error.
    fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        let mut buf = SCRATCH.take();
        buf.clear();
        let r = f(&mut buf);
        if buf.capacity() <= SCRATCH_KEEP {
            SCRATCH.set(buf);
        }
        r
    }

    /// Encodes `value` with postcard and passes the bytes to `send`.
    pub(crate) fn serialized<T: ?Sized + ::serde::Serialize>(
        value: &T,
        send: impl FnOnce(&[u8]) -> Result<(), SendError<()>>,
    ) -> Result<(), crate::SendError<()>> {
        with_scratch(|buf| {
            let encoded = postcard::to_extend(value, core::mem::take(buf))
                .map_err(|e| SendError::Serialize(e.to_string()))?;
            *buf = encoded;
            send(buf)
        })
    }

    /// Copies a message out and decodes exactly one `T` from it with
    /// postcard (nothing may be left over).
    pub(crate) fn deserialize<T: serde::de::DeserializeOwned>(
        m: ShmSlice<'_>,
    ) -> Result<T, RecvError> {
        with_scratch(|buf| {
            buf.resize(m.len(), 0);
            m.copy_to(buf);
            let (value, rest) = postcard::take_from_bytes::<T>(buf)
                .map_err(|e| RecvError::Deserialize(e.to_string()))?;
            if !rest.is_empty() {
                return Err(RecvError::Deserialize(format!(
                    "{} of the message's {} bytes are left over after the value",
                    rest.len(),
                    m.len()
                )));
            }
            Ok(value)
        })
    }
}
#[cfg(feature = "serde")]
pub(crate) use self::serialized::{deserialize, serialized};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::ShmView;
    use zerocopy::KnownLayout;

    #[derive(Debug, PartialEq, FromBytes, IntoBytes, Immutable, KnownLayout)]
    #[repr(C)]
    struct Rec {
        a: u64,
        b: u32,
        c: [u8; 4],
    }

    const REC: Rec = Rec {
        a: 0x0102_0304_0506_0708,
        b: 9,
        c: *b"abcd",
    };

    #[test]
    fn decodes_exactly_one_value_and_refuses_other_lengths() {
        // One byte in: the value's bytes start unaligned for a u64.
        let view = ShmView::heap(64);
        assert!(view.slice_mut(1, 16).unwrap().write_at(0, REC.as_bytes()));
        let got: Rec = decode(view.slice(1, 16).unwrap()).unwrap();
        assert_eq!(got, REC);
        for len in [0, 15, 17] {
            assert_eq!(
                decode::<Rec>(view.slice(1, len).unwrap()),
                Err(RecvError::WrongSize { len, expected: 16 })
            );
        }
        assert_eq!(decode::<()>(view.slice(0, 0).unwrap()), Ok(()));
    }

    #[test]
    fn places_the_value_with_the_sender_name() {
        let fit: (String, Result<(), usize>) = ("a".into(), Ok(()));
        assert_eq!(fit.place(3u8), Ok(("a".to_string(), 3)));
        let wrong: (String, Result<(), usize>) = ("a".into(), Err(2));
        assert_eq!(
            wrong.place(3u8),
            Err(RecvError::WrongSize {
                len: 2,
                expected: 1
            })
        );
        let decoded: (String, Result<u8, RecvError>) = ("b".into(), Ok(4));
        assert_eq!(decoded.place(()), Ok(("b".to_string(), 4)));
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serializes_and_deserializes_through_the_scratch_buffer() {
        let view = ShmView::heap(256);
        let value = ("hello".to_string(), vec![1u32, 2, 300]);
        let mut len = 0;
        serialized(&value, |bytes| {
            len = bytes.len();
            assert!(view.slice_mut(0, len).unwrap().write_at(0, bytes));
            Ok(())
        })
        .unwrap();
        let got: (String, Vec<u32>) = deserialize(view.slice(0, len).unwrap()).unwrap();
        assert_eq!(got, value);
        // Trailing bytes and truncation are refused.
        let long = deserialize::<(String, Vec<u32>)>(view.slice(0, len + 1).unwrap());
        assert!(matches!(long, Err(RecvError::Deserialize(m)) if m.contains("left over")));
        let short = deserialize::<(String, Vec<u32>)>(view.slice(0, len - 1).unwrap());
        assert!(matches!(short, Err(RecvError::Deserialize(_))));
    }
}
