/* CPacketSys.h — the kernel path of PacketIO: AF_PACKET sockets with
 * TPACKET_V2 RX/TX rings mmap'ed into the process (Documentation/networking/
 * packet_mmap.rst), plus the little the Swift side cannot import: socket
 * option numbers, sockaddr_ll, the ring header offsets (asserted against the
 * uapi structs), acquire/release accesses to tp_status, relaxed 64-bit
 * counters, and a stop flag set from a signal handler.
 *
 * Only PacketIO imports this module (`internal import CPacketSys`); no C type
 * appears in a public Swift API. Every function returns 0 / a value >= 0 on
 * success and -errno on failure, so the Swift side can say what failed. */
#pragma once

#include <stddef.h>
#include <stdint.h>


/* ---- tpacket2_hdr (linux/if_packet.h), asserted in CPacketSys.c ---------- */
enum {
  VIO_TP_STATUS_KERNEL = 0,
  VIO_TP_STATUS_USER = 1,
  VIO_TP_STATUS_COPY = 2,
  VIO_TP_STATUS_LOSING = 4,
  VIO_TP_STATUS_CSUMNOTREADY = 8,
  VIO_TP_STATUS_AVAILABLE = 0,
  VIO_TP_STATUS_SEND_REQUEST = 1,
  VIO_TP_STATUS_SENDING = 2,
  VIO_TP_STATUS_WRONG_FORMAT = 4,
  /* offsets inside struct tpacket2_hdr */
  VIO_TP2_STATUS = 0,
  VIO_TP2_LEN = 4,
  VIO_TP2_SNAPLEN = 8,
  VIO_TP2_MAC = 12,
  VIO_TP2_NET = 14,
  /* TX: where the frame's data starts without PACKET_TX_HAS_OFF
   * (TPACKET2_HDRLEN - sizeof(struct sockaddr_ll)). */
  VIO_TP2_TX_DATA = 32,
  /* RX: sockaddr_ll follows the aligned header; sll_pkttype at +10 in it. */
  VIO_TP2_SLL = 32,
  VIO_SLL_PKTTYPE = 10,
  VIO_PACKET_OUTGOING = 4,
};

/* Which setup step failed (for the error message). */
enum {
  VIO_PKT_STEP_SOCKET = 1,
  VIO_PKT_STEP_VERSION,
  VIO_PKT_STEP_RX_RING,
  VIO_PKT_STEP_TX_RING,
  VIO_PKT_STEP_MMAP,
  VIO_PKT_STEP_BIND,
  VIO_PKT_STEP_FANOUT,
};

/* One AF_PACKET socket with its two rings. */
typedef struct {
  int fd;
  void *map;              /* rx ring, then tx ring, one mapping */
  size_t map_len;
  void *rx_ring;
  void *tx_ring;
  uint32_t frame_size;
  uint32_t rx_frames;
  uint32_t tx_frames;
  int failed_step;        /* VIO_PKT_STEP_* when setup failed */
} vio_pkt_ring;

/* Opens a socket on interface `ifindex` with TPACKET_V2 rings of `rx_frames`
 * / `tx_frames` frames of `frame_size` bytes (a power of two >= 2048), mapped
 * in one mmap; ignores its own outgoing frames (PACKET_IGNORE_OUTGOING when
 * the kernel has it), bypasses the qdisc on TX (PACKET_QDISC_BYPASS), binds
 * to ETH_P_ALL. With fanout_group > 0 the socket joins that PACKET_FANOUT
 * group in hash mode (flows spread over the group's sockets, each flow kept
 * on one). Returns 0 or -errno (r->failed_step says where). */
int vio_pkt_open(vio_pkt_ring *r, int ifindex, uint32_t frame_size, uint32_t rx_frames, uint32_t tx_frames,
                 uint16_t fanout_group);
/* Unmaps and closes. */
void vio_pkt_close(vio_pkt_ring *r);

/* Kicks the TX ring: send(fd, NULL, 0, MSG_DONTWAIT). Returns 0 or -errno. */
int vio_pkt_kick(int fd);
/* poll(POLLOUT) on fd for at most timeout_ms: 1 writable, 0 not yet, or -errno. */
int vio_pkt_wait_writable(int fd, int timeout_ms);
/* PACKET_ADD/DROP_MEMBERSHIP with PACKET_MR_PROMISC. */
int vio_pkt_promisc(int fd, int ifindex, int on);
/* PACKET_STATISTICS (tp_packets, tp_drops; the kernel resets them on read). */
int vio_pkt_statistics(int fd, uint32_t *packets, uint32_t *drops);

/* Interface facts through a throw-away socket: index, MAC, MTU, IFF_* flags. */
int vio_pkt_ifindex(const char *name);
int vio_pkt_ifinfo(const char *name, uint8_t mac[6], int *mtu, unsigned *flags);
/* Sets IFF_UP on an interface (SIOCSIFFLAGS; needs CAP_NET_ADMIN). 0 or -errno. */
int vio_pkt_set_up(const char *name);


/* tp_status handshake with the kernel. */
static inline uint32_t vio_pkt_load_acquire_u32(const void *p) {
  return __atomic_load_n((const uint32_t *)p, __ATOMIC_ACQUIRE);
}
static inline void vio_pkt_store_release_u32(void *p, uint32_t v) {
  __atomic_store_n((uint32_t *)p, v, __ATOMIC_RELEASE);
}
/* Counters one thread writes and another reads (no ordering needed). */
static inline uint64_t vio_pkt_load_relaxed_u64(const void *p) {
  return __atomic_load_n((const uint64_t *)p, __ATOMIC_RELAXED);
}
static inline void vio_pkt_store_relaxed_u64(void *p, uint64_t v) {
  __atomic_store_n((uint64_t *)p, v, __ATOMIC_RELAXED);
}
static inline uint32_t vio_pkt_load_relaxed_u32(const void *p) {
  return __atomic_load_n((const uint32_t *)p, __ATOMIC_RELAXED);
}
static inline void vio_pkt_store_relaxed_u32(void *p, uint32_t v) {
  __atomic_store_n((uint32_t *)p, v, __ATOMIC_RELAXED);
}


