#define _GNU_SOURCE
#include "cnetdev.h"
#include "bench_thread.h"
#include <stdlib.h>
#include <string.h>

#define HDR 12
#define F_NEXT 1
#define F_WRITE 2
#define P_AVAIL (1u << 7)
#define P_USED (1u << 15)

struct desc { uint64_t addr; uint32_t len; uint16_t flags; uint16_t next; };
struct pdesc { uint64_t addr; uint32_t len; uint16_t id; uint16_t flags; };

static inline uint16_t ld_acq16(const void *p) { return __atomic_load_n((const uint16_t *)p, __ATOMIC_ACQUIRE); }
static inline uint16_t ld16(const void *p) { return __atomic_load_n((const uint16_t *)p, __ATOMIC_RELAXED); }
static inline void st_rel16(void *p, uint16_t v) { __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELEASE); }
static inline void st16(void *p, uint16_t v) { __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELAXED); }

/* One queue, split or packed, device side. */
struct q {
  void *desc, *driver, *device;
  uint16_t size, mask;
  /* split */
  uint16_t last_avail, used_idx;
  /* packed */
  uint16_t slot, used_slot;
  uint8_t wrap, used_wrap;
};

struct cnet_dev {
  _Alignas(128) struct q rx;
  struct q tx;
  int packed;
  int broken;
  const uint8_t *frame;
  uint32_t frame_len;
  uint64_t rx_frames, tx_frames;
  /* MRG_RXBUF (§5.1.6.4): a frame larger than one RX buffer goes on in the next ones;
   * rx_at is how much of the current frame is written (0: the next buffer starts one). */
  int mergeable;
  uint32_t rx_at;
  /* The first buffer's virtio_net_hdr_v1 (num_buffers aside): zero, or a GSO header (cnet_dev_set_gso). */
  uint8_t rx_hdr[HDR];
};

static void q_init(struct q *q, void *desc, void *driver, void *device, uint16_t size) {
  memset(q, 0, sizeof *q);
  q->desc = desc; q->driver = driver; q->device = device; q->size = size; q->mask = size - 1;
  q->wrap = 1; q->used_wrap = 1;
}

cnet_dev *cnet_dev_new(int packed, void *rx_desc, void *rx_driver, void *rx_device, uint16_t rx_size, void *tx_desc,
                       void *tx_driver, void *tx_device, uint16_t tx_size, const uint8_t *frame, uint32_t frame_len) {
  cnet_dev *d = aligned_alloc(128, (sizeof(cnet_dev) + 127) & ~(size_t)127);
  memset(d, 0, sizeof *d);
  d->packed = packed;
  q_init(&d->rx, rx_desc, rx_driver, rx_device, rx_size);
  q_init(&d->tx, tx_desc, tx_driver, tx_device, tx_size);
  d->frame = frame; d->frame_len = frame_len;
  return d;
}
void cnet_dev_free(cnet_dev *d) { free(d); }
void cnet_dev_set_mergeable(cnet_dev *d) { d->mergeable = 1; }

void cnet_dev_set_gso(cnet_dev *d, uint8_t gso_type, uint16_t hdr_len, uint16_t gso_size, uint16_t csum_start,
                      uint16_t csum_offset) {
  /* §5.1.6: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset (little-endian, as x86 stores them). */
  d->rx_hdr[0] = 1; /* VIRTIO_NET_HDR_F_NEEDS_CSUM: a GSO packet's checksum is partial (§5.1.6.4.1) */
  d->rx_hdr[1] = gso_type;
  memcpy(d->rx_hdr + 2, &hdr_len, 2);
  memcpy(d->rx_hdr + 4, &gso_size, 2);
  memcpy(d->rx_hdr + 6, &csum_start, 2);
  memcpy(d->rx_hdr + 8, &csum_offset, 2);
}

/* MRG_RXBUF: the next piece of the frame into an RX buffer of `cap` bytes; the first
 * piece after a header whose num_buffers counts the buffers the frame takes (every
 * posted buffer has the same size). Returns the bytes written. */
static inline uint32_t use_rx_merged(cnet_dev *d, uint64_t addr, uint32_t cap) {
  uint8_t *b = (uint8_t *)(uintptr_t)addr;
  uint32_t off = 0;
  if (d->rx_at == 0) {
    uint32_t first = cap - HDR;
    uint16_t nb = 1;
    if (d->frame_len > first) nb += (uint16_t)((d->frame_len - first + cap - 1) / cap);
    memcpy(b, d->rx_hdr, HDR);
    memcpy(b + 10, &nb, 2);
    off = HDR;
  }
  uint32_t chunk = d->frame_len - d->rx_at;
  if (chunk > cap - off) chunk = cap - off;
  memcpy(b + off, d->frame + d->rx_at, chunk);
  d->rx_at += chunk;
  if (d->rx_at == d->frame_len) d->rx_at = 0;
  return off + chunk;
}

/* What the device does with one buffer: an RX buffer gets a zero virtio_net_hdr_v1 and
 * the frame (returns the length written); of a TX buffer it reads the frame's first
 * byte, as a device sending it would (returns 0). */
static inline uint32_t use_buffer(const cnet_dev *d, uint64_t addr, int rx) {
  uint8_t *b = (uint8_t *)(uintptr_t)addr;
  if (!rx) {
    volatile uint8_t first = *(b + HDR);
    (void)first;
    return 0;
  }
  memset(b, 0, HDR);
  memcpy(b + HDR, d->frame, d->frame_len);
  return HDR + d->frame_len;
}

/* The pass functions are compiled once per `mrg` (a constant): the one-buffer
 * pass is the code it was before chains, so the driver's instruction counts
 * are not charged for the chain mode (docs/PERFORMANCE.md). */
#define PASS static inline __attribute__((always_inline)) uint32_t

/* ---- split (§2.7): avail = flags, idx, ring[size], used_event; used = flags, idx, ring[size] {id, len}, avail_event */
PASS split_pass_as(cnet_dev *d, struct q *q, int rx, const int mrg) {
  uint16_t *avail = q->driver;
  uint8_t *used = q->device;
  struct desc *table = q->desc;
  uint16_t idx = ld_acq16(&avail[1]);
  uint32_t n = 0;
  /* The least an RX buffer must hold. */
  const uint32_t need = mrg ? HDR + 1 : HDR + d->frame_len;
  while (q->last_avail != idx) {
    uint16_t head = ld16(&avail[2 + (q->last_avail & q->mask)]);
    if (head >= q->size) { d->broken = 1; return n; }
    struct desc *e = &table[head];
    if (rx && (e->len < need || !(e->flags & F_WRITE))) { d->broken = 1; return n; }
    uint32_t len = mrg ? use_rx_merged(d, e->addr, e->len) : use_buffer(d, e->addr, rx);
    uint8_t *u = used + 4 + 8 * (size_t)(q->used_idx & q->mask);
    memcpy(u, &(uint32_t){head}, 4);
    memcpy(u + 4, &len, 4);
    q->last_avail++; q->used_idx++; n++;
  }
  if (n) {
    st_rel16(used + 2, q->used_idx);
    /* EVENT_IDX: kick me when the driver makes the next entry available. */
    st16(used + 4 + 8 * (size_t)q->size, q->last_avail);
  }
  return n;
}

/* ---- packed (§2.8): descriptors in one ring, used in place with the wrap counters. */
PASS packed_pass_as(cnet_dev *d, struct q *q, int rx, const int mrg) {
  struct pdesc *ring = q->desc;
  uint32_t n = 0;
  const uint32_t need = mrg ? HDR + 1 : HDR + d->frame_len;
  for (;;) {
    struct pdesc *p = &ring[q->slot];
    uint16_t f = ld_acq16(&p->flags);
    int a = (f & P_AVAIL) != 0, u = (f & P_USED) != 0;
    if (a != q->wrap || u == q->wrap) break;
    if (rx && p->len < need) { d->broken = 1; return n; }
    uint32_t len = mrg ? use_rx_merged(d, p->addr, p->len) : use_buffer(d, p->addr, rx);
    uint16_t id = p->id;
    struct pdesc *w = &ring[q->used_slot];
    w->id = id; w->len = len;
    st_rel16(&w->flags, q->used_wrap ? (P_AVAIL | P_USED) : 0);
    if (++q->slot == q->size) { q->slot = 0; q->wrap ^= 1; }
    if (++q->used_slot == q->size) { q->used_slot = 0; q->used_wrap ^= 1; }
    n++;
  }
  if (n) {
    uint16_t *dev_ev = q->device;
    st16(&dev_ev[0], (uint16_t)(q->slot | (q->wrap ? 0x8000 : 0)));
    st16(&dev_ev[1], 2 /* RING_EVENT_FLAGS_DESC */);
  }
  return n;
}

static uint32_t split_pass(cnet_dev *d, struct q *q, int rx) {
  return rx && d->mergeable ? split_pass_as(d, q, 1, 1) : split_pass_as(d, q, rx, 0);
}
static uint32_t packed_pass(cnet_dev *d, struct q *q, int rx) {
  return rx && d->mergeable ? packed_pass_as(d, q, 1, 1) : packed_pass_as(d, q, rx, 0);
}

uint32_t cnet_dev_process(cnet_dev *d) {
  if (d->broken) return 0;
  uint32_t r, t;
  if (d->packed) { r = packed_pass(d, &d->rx, 1); t = packed_pass(d, &d->tx, 0); }
  else { r = split_pass(d, &d->rx, 1); t = split_pass(d, &d->tx, 0); }
  d->rx_frames += r; d->tx_frames += t;
  return r + t;
}

uint64_t cnet_dev_rx_frames(const cnet_dev *d) { return d->rx_frames; }
uint64_t cnet_dev_tx_frames(const cnet_dev *d) { return d->tx_frames; }
int cnet_dev_broken(const cnet_dev *d) { return d->broken; }

void cnet_pin_self(int cpu) { bench_pin_self(cpu); }

static uint32_t device_pass(void *d) { return cnet_dev_process(d); }

void *cnet_dev_start(cnet_dev *d, int cpu) { return bench_poller_start(device_pass, d, cpu); }
void cnet_dev_stop(void *handle) { bench_poller_stop(handle); }
