//! The I/O-port devices: COM1, isa-debug-exit, the checkpoint and wait-hint ports, and
//! unassigned ports, as a guest driver observes them.

use vmm_server::devices::{IoBus, IoEffect, SerialSink};

#[derive(Default)]
struct Out(Vec<u8>);
impl SerialSink for Out {
    fn put(&mut self, byte: u8) {
        self.0.push(byte);
    }
}

#[test]
fn com1_transmits_and_reports_an_empty_transmitter() {
    let mut bus = IoBus::new();
    let mut out = Out::default();
    for b in b"hi\n" {
        assert_eq!(bus.read(0x3fd, 1) & 0x60, 0x60, "LSR: THRE | TEMT");
        assert_eq!(bus.write(0x3f8, 1, *b as u32, &mut out), IoEffect::None);
    }
    assert_eq!(out.0, b"hi\n");
    assert_eq!(bus.com1.transmitted(), 3);
    assert_eq!(bus.read(0x3fd, 1) & 1, 0, "no received data");
    assert_eq!(bus.read(0x3fa, 1), 0x01, "IIR: no interrupt pending");
}

#[test]
fn com1_init_sequence_of_a_typical_driver() {
    let mut bus = IoBus::new();
    let mut out = Out::default();
    bus.write(0x3f9, 1, 0x00, &mut out); // IER off
    bus.write(0x3fb, 1, 0x80, &mut out); // DLAB
    bus.write(0x3f8, 1, 0x03, &mut out); // divisor low (38400 baud)
    bus.write(0x3f9, 1, 0x00, &mut out); // divisor high
    assert_eq!(bus.read(0x3f8, 1), 0x03, "divisor latch readable with DLAB");
    bus.write(0x3fb, 1, 0x03, &mut out); // 8N1, DLAB off
    bus.write(0x3fa, 1, 0xc7, &mut out); // FIFO on
    assert_eq!(bus.read(0x3fa, 1), 0xc1, "IIR with FIFOs enabled");
    bus.write(0x3fc, 1, 0x1e, &mut out); // loopback
    bus.write(0x3f8, 1, 0xae, &mut out);
    assert_eq!(bus.read(0x3fd, 1) & 1, 1, "loopback byte received");
    assert_eq!(bus.read(0x3f8, 1), 0xae, "loopback echoes");
    assert!(out.0.is_empty(), "loopback bytes are not transmitted");
    bus.write(0x3fc, 1, 0x0f, &mut out); // normal operation
    bus.write(0x3ff, 1, 0x5a, &mut out);
    assert_eq!(bus.read(0x3ff, 1), 0x5a, "scratch register");
    bus.write(0x3f8, 1, b'x' as u32, &mut out);
    assert_eq!(out.0, b"x");
    assert_eq!(bus.read(0x3fb, 1), 0x03);
}

#[test]
fn debug_exit_status_is_v_shifted_or_one() {
    let mut bus = IoBus::new();
    let mut out = Out::default();
    assert_eq!(
        bus.write(0xf4, 4, 0, &mut out),
        IoEffect::Exit { status: 1 }
    );
    assert_eq!(
        bus.write(0xf4, 4, 0x10, &mut out),
        IoEffect::Exit { status: 0x21 }
    );
    assert_eq!(
        bus.write(0xf4, 1, 0x1ff, &mut out),
        IoEffect::Exit { status: 0x1ff }
    );
    assert_eq!(
        bus.write(0xf7, 2, 3, &mut out),
        IoEffect::Exit { status: 7 }
    );
    assert_eq!(bus.read(0xf4, 4), 0);
    assert_eq!(
        bus.write(0xf8, 4, 0, &mut out),
        IoEffect::None,
        "outside iosize 4"
    );
}

#[test]
fn checkpoint_and_wait_hint_ports() {
    let mut bus = IoBus::new();
    let mut out = Out::default();
    assert_eq!(
        bus.write(0x80, 4, 3, &mut out),
        IoEffect::Checkpoint { step: 3 }
    );
    assert_eq!(
        bus.write(0x81, 4, 500, &mut out),
        IoEffect::WaitHint { ms: 500 }
    );
    assert_eq!(
        bus.write(0x80, 1, 0, &mut out),
        IoEffect::None,
        "outb 0x80 is an I/O delay"
    );
}

#[test]
fn unassigned_ports_read_all_ones_and_ignore_writes() {
    let mut bus = IoBus::new();
    let mut out = Out::default();
    assert_eq!(bus.read(0x60, 1), 0xff);
    assert_eq!(bus.read(0x1234, 2), 0xffff);
    assert_eq!(bus.read(0xcf8, 4), 0xffff_ffff);
    assert_eq!(bus.write(0x70, 1, 0x8f, &mut out), IoEffect::None);
    assert!(out.0.is_empty());
    // A word read straddling the end of COM1: the LSR byte, then an unassigned port.
    assert_eq!(bus.read(0x3ff, 2) >> 8, 0xff);
}
