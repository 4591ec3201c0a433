//! memfd with seals, handed to a child process.

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use mmkit_region::memfd::{Memfd, Seals};
use mmkit_region::{Access, Error, Mode};

#[test]
fn child_entry() {
    let Some(role) = common::role() else { return };
    match role.as_str() {
        "sealed_reader" => child_sealed_reader(),
        other => panic!("unknown role {other}"),
    }
    std::process::exit(0);
}

fn child_sealed_reader() {
    let raw: i32 = common::env("MEMFD_FD").parse().unwrap();
    // SAFETY: the parent passed this descriptor to us open and without
    // CLOEXEC; nothing else in this process owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let memfd = Memfd::from_fd(fd).unwrap();
    assert!(memfd.seals().unwrap().contains(Seals::SHRINK | Seals::GROW));
    let map = memfd.map(Mode::ReadOnly).unwrap();
    let mut buf = [0u8; 12];
    map.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"from parent!");
    let err = memfd.set_len(0).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    let err = memfd.set_len(1 << 20).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    assert_eq!(memfd.len().unwrap(), 16_384);
    println!("child-read-ok");
}

#[test]
fn a_child_can_read_but_not_shrink_a_sealed_memfd() {
    let memfd = Memfd::create("mmkit-test", 16_384).unwrap();
    assert!(memfd.seals().unwrap().is_empty());
    memfd.map(Mode::ReadWrite).unwrap().write_at(0, b"from parent!").unwrap();
    memfd.seal(Seals::SHRINK | Seals::GROW).unwrap();

    // `dup` gives a descriptor without CLOEXEC, so the child inherits it.
    let inheritable = rustix::io::dup(memfd.as_fd()).unwrap();
    let out = common::run_child("sealed_reader", &[("MEMFD_FD", inheritable.as_raw_fd().to_string())]);
    drop(inheritable);
    common::assert_child_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("child-read-ok"));
}

#[test]
fn seals_are_enforced_in_this_process_too() {
    let memfd = Memfd::create("seals", 8192).unwrap();
    memfd.set_len(4096).unwrap();
    memfd.seal(Seals::SHRINK).unwrap();
    assert!(memfd.set_len(8192).is_ok(), "growing is still allowed");
    assert!(memfd.set_len(100).is_err());

    // WRITE cannot be added while a writable shared mapping exists.
    let map = memfd.map(Mode::ReadWrite).unwrap();
    assert_eq!(memfd.seal(Seals::WRITE).unwrap_err().raw_os_error(), Some(libc::EBUSY));
    drop(map);
    memfd.seal(Seals::WRITE | Seals::SEAL).unwrap();
    assert!(memfd.map(Mode::ReadWrite).is_err(), "no writable mapping after WRITE");
    assert!(memfd.map(Mode::ReadOnly).is_ok());
    let err = memfd.seal(Seals::GROW).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "SEAL forbids more seals: {err}");
    assert_eq!(memfd.seals().unwrap(), Seals::SHRINK | Seals::WRITE | Seals::SEAL);
}

#[test]
fn future_write_keeps_existing_mappings_writable() {
    let memfd = Memfd::create("future", 4096).unwrap();
    let map = memfd.map(Mode::ReadWrite).unwrap();
    memfd.seal(Seals::FUTURE_WRITE).unwrap();
    map.write_at(0, b"still ok").unwrap();
    assert!(memfd.map(Mode::ReadWrite).is_err());
}

#[test]
fn bad_memfd_names_and_descriptors() {
    assert!(matches!(Memfd::create("a\0b", 10), Err(Error::InvalidName { .. })));
    assert!(matches!(Memfd::create(&"x".repeat(250), 10), Err(Error::InvalidName { .. })));
    let dir = std::fs::File::open("/").unwrap();
    assert!(matches!(Memfd::from_fd(dir.into()), Err(Error::Invalid { .. })));
    let empty = Memfd::create("empty", 0).unwrap();
    assert!(empty.is_empty().unwrap());
    assert!(matches!(empty.map(Mode::ReadOnly), Err(Error::ZeroLength { .. })));
    let fd = empty.into_fd();
    assert!(Memfd::from_fd(fd).is_ok());
}
