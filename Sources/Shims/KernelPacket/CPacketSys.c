/* The kernel path's system calls (see include/CPacketSys.h). */
#define _GNU_SOURCE
#include "CPacketSys.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <poll.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* The Swift side reads these fields at fixed offsets: pin them. */
_Static_assert(offsetof(struct tpacket2_hdr, tp_status) == VIO_TP2_STATUS, "tp_status");
_Static_assert(offsetof(struct tpacket2_hdr, tp_len) == VIO_TP2_LEN, "tp_len");
_Static_assert(offsetof(struct tpacket2_hdr, tp_snaplen) == VIO_TP2_SNAPLEN, "tp_snaplen");
_Static_assert(offsetof(struct tpacket2_hdr, tp_mac) == VIO_TP2_MAC, "tp_mac");
_Static_assert(offsetof(struct tpacket2_hdr, tp_net) == VIO_TP2_NET, "tp_net");
_Static_assert(TPACKET_ALIGN(sizeof(struct tpacket2_hdr)) == VIO_TP2_TX_DATA, "TX data offset");
_Static_assert(TPACKET2_HDRLEN - sizeof(struct sockaddr_ll) == VIO_TP2_TX_DATA, "TPACKET2_HDRLEN");
_Static_assert(TPACKET_ALIGN(sizeof(struct tpacket2_hdr)) == VIO_TP2_SLL, "sockaddr_ll offset");
_Static_assert(offsetof(struct sockaddr_ll, sll_pkttype) == VIO_SLL_PKTTYPE, "sll_pkttype");
_Static_assert(TP_STATUS_USER == VIO_TP_STATUS_USER && TP_STATUS_SEND_REQUEST == VIO_TP_STATUS_SEND_REQUEST, "status");
_Static_assert(TP_STATUS_CSUMNOTREADY == VIO_TP_STATUS_CSUMNOTREADY && TP_STATUS_WRONG_FORMAT == VIO_TP_STATUS_WRONG_FORMAT, "status");
_Static_assert(PACKET_OUTGOING == VIO_PACKET_OUTGOING, "pkttype");

#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23
#endif

static int fail(vio_pkt_ring *r, int step) {
  int e = errno;
  r->failed_step = step;
  vio_pkt_close(r);
  return -e;
}

/* Ring geometry: frames of frame_size in blocks of max(frame_size, 64 KiB). */
static void ring_req(struct tpacket_req *req, uint32_t frame_size, uint32_t frames) {
  uint32_t block = frame_size > 65536 ? frame_size : 65536;
  uint32_t per_block = block / frame_size;
  uint32_t blocks = (frames + per_block - 1) / per_block;
  req->tp_block_size = block;
  req->tp_block_nr = blocks;
  req->tp_frame_size = frame_size;
  req->tp_frame_nr = blocks * per_block;
}

int vio_pkt_open(vio_pkt_ring *r, int ifindex, uint32_t frame_size, uint32_t rx_frames, uint32_t tx_frames,
                 uint16_t fanout_group) {
  memset(r, 0, sizeof *r);
  r->fd = -1;
  if (frame_size < 2048 || (frame_size & (frame_size - 1)) || rx_frames == 0 || tx_frames == 0) {
    errno = EINVAL;
    return fail(r, VIO_PKT_STEP_RX_RING);
  }
  /* Protocol 0 until bind: nothing is queued before the rings exist. */
  r->fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (r->fd < 0) return fail(r, VIO_PKT_STEP_SOCKET);
  int v = TPACKET_V2;
  if (setsockopt(r->fd, SOL_PACKET, PACKET_VERSION, &v, sizeof v) < 0) return fail(r, VIO_PKT_STEP_VERSION);
  struct tpacket_req rx, tx;
  ring_req(&rx, frame_size, rx_frames);
  ring_req(&tx, frame_size, tx_frames);
  /* A malformed TX frame is skipped (TP_STATUS_AVAILABLE), not left to stall the ring. */
  int loss = 1;
  (void)setsockopt(r->fd, SOL_PACKET, PACKET_LOSS, &loss, sizeof loss);
  if (setsockopt(r->fd, SOL_PACKET, PACKET_RX_RING, &rx, sizeof rx) < 0) return fail(r, VIO_PKT_STEP_RX_RING);
  if (setsockopt(r->fd, SOL_PACKET, PACKET_TX_RING, &tx, sizeof tx) < 0) return fail(r, VIO_PKT_STEP_TX_RING);
  /* Optional: not every kernel has them; without, outgoing frames are filtered by sll_pkttype. */
  int one = 1;
  (void)setsockopt(r->fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one);
  (void)setsockopt(r->fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one);
  size_t rx_len = (size_t)rx.tp_block_size * rx.tp_block_nr, tx_len = (size_t)tx.tp_block_size * tx.tp_block_nr;
  void *m = mmap(NULL, rx_len + tx_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_LOCKED | MAP_POPULATE, r->fd, 0);
  if (m == MAP_FAILED) m = mmap(NULL, rx_len + tx_len, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, 0);
  if (m == MAP_FAILED) return fail(r, VIO_PKT_STEP_MMAP);
  r->map = m;
  r->map_len = rx_len + tx_len;
  r->rx_ring = m;
  r->tx_ring = (char *)m + rx_len;
  r->frame_size = frame_size;
  r->rx_frames = rx.tp_frame_nr;
  r->tx_frames = tx.tp_frame_nr;
  struct sockaddr_ll sll;
  memset(&sll, 0, sizeof sll);
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons(ETH_P_ALL);
  sll.sll_ifindex = ifindex;
  if (bind(r->fd, (struct sockaddr *)&sll, sizeof sll) < 0) return fail(r, VIO_PKT_STEP_BIND);
  if (fanout_group) {
    int arg = fanout_group | (PACKET_FANOUT_HASH << 16);
    if (setsockopt(r->fd, SOL_PACKET, PACKET_FANOUT, &arg, sizeof arg) < 0) return fail(r, VIO_PKT_STEP_FANOUT);
  }
  return 0;
}

void vio_pkt_close(vio_pkt_ring *r) {
  if (r->map) munmap(r->map, r->map_len);
  if (r->fd >= 0) close(r->fd);
  r->map = NULL;
  r->fd = -1;
}

int vio_pkt_kick(int fd) {
  for (;;) {
    if (send(fd, NULL, 0, MSG_DONTWAIT) >= 0) return 0;
    if (errno != EINTR) return -errno;
  }
}

int vio_pkt_wait_writable(int fd, int timeout_ms) {
  struct pollfd p = {.fd = fd, .events = POLLOUT, .revents = 0};
  int n;
  do { n = poll(&p, 1, timeout_ms); } while (n < 0 && errno == EINTR);
  return n < 0 ? -errno : n;
}

int vio_pkt_promisc(int fd, int ifindex, int on) {
  struct packet_mreq mr;
  memset(&mr, 0, sizeof mr);
  mr.mr_ifindex = ifindex;
  mr.mr_type = PACKET_MR_PROMISC;
  int opt = on ? PACKET_ADD_MEMBERSHIP : PACKET_DROP_MEMBERSHIP;
  return setsockopt(fd, SOL_PACKET, opt, &mr, sizeof mr) < 0 ? -errno : 0;
}

int vio_pkt_statistics(int fd, uint32_t *packets, uint32_t *drops) {
  struct tpacket_stats st;
  socklen_t len = sizeof st;
  if (getsockopt(fd, SOL_PACKET, PACKET_STATISTICS, &st, &len) < 0) return -errno;
  *packets = st.tp_packets;
  *drops = st.tp_drops;
  return 0;
}

int vio_pkt_ifindex(const char *name) {
  unsigned i = if_nametoindex(name);
  return i ? (int)i : -errno;
}

/* A throw-away socket for interface ioctls and an ifreq naming `name`:
 * the socket, or -errno. */
static int ifreq_socket(const char *name, struct ifreq *ifr) {
  if (strlen(name) >= IFNAMSIZ) return -ENAMETOOLONG;
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) s = socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -errno;
  memset(ifr, 0, sizeof *ifr);
  strncpy(ifr->ifr_name, name, IFNAMSIZ - 1);
  return s;
}

int vio_pkt_ifinfo(const char *name, uint8_t mac[6], int *mtu, unsigned *flags) {
  struct ifreq ifr;
  int s = ifreq_socket(name, &ifr);
  if (s < 0) return s;
  int rc = 0;
  if (ioctl(s, SIOCGIFHWADDR, &ifr) < 0) { rc = -errno; goto out; }
  memcpy(mac, ifr.ifr_hwaddr.sa_data, 6);
  if (ioctl(s, SIOCGIFMTU, &ifr) < 0) { rc = -errno; goto out; }
  *mtu = ifr.ifr_mtu;
  if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) { rc = -errno; goto out; }
  *flags = (unsigned short)ifr.ifr_flags;
out:
  close(s);
  return rc;
}

int vio_pkt_set_up(const char *name) {
  struct ifreq ifr;
  int s = ifreq_socket(name, &ifr);
  if (s < 0) return s;
  int rc = 0;
  if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) { rc = -errno; goto out; }
  if (!(ifr.ifr_flags & IFF_UP)) {
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0) rc = -errno;
  }
out:
  close(s);
  return rc;
}
