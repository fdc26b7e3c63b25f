/* The device side of one virtio-net queue pair for net-bench, in plain C (as
 * ring-bench's device loop is): it fills every RX buffer the driver posts with
 * a virtio_net_hdr_v1 (zero) and one frame, and consumes every TX chain,
 * over rings the Swift driver laid out (split §2.7 or packed §2.8), with
 * EVENT_IDX. "IOVA" = address: the bench's DMA memory is plain memory. */
#pragma once
#include <stdint.h>

typedef struct cnet_dev cnet_dev;

/* Queue areas as the driver reports them (descAreaIOVA, driverAreaIOVA, deviceAreaIOVA). */
cnet_dev *cnet_dev_new(int packed, void *rx_desc, void *rx_driver, void *rx_device, uint16_t rx_size, void *tx_desc,
                       void *tx_driver, void *tx_device, uint16_t tx_size, const uint8_t *frame, uint32_t frame_len);
/* MRG_RXBUF: frames larger than an RX buffer are spread over several (num_buffers in
 * the first one's header); TX chains must then be indirect (one slot each). */
void cnet_dev_set_mergeable(cnet_dev *d);
/* With MRG_RXBUF: each frame's first buffer carries this GSO header (§5.1.6: NEEDS_CSUM,
 * gso_type, hdr_len, gso_size, csum_start, csum_offset) instead of a zero one. */
void cnet_dev_set_gso(cnet_dev *d, uint8_t gso_type, uint16_t hdr_len, uint16_t gso_size, uint16_t csum_start,
                      uint16_t csum_offset);
void cnet_dev_free(cnet_dev *d);
/* One pass: fill the available RX buffers, consume the available TX chains. Returns the work done. */
uint32_t cnet_dev_process(cnet_dev *d);
/* Runs cnet_dev_process on a thread pinned to `cpu` (< 0: not pinned) until cnet_dev_stop. */
void *cnet_dev_start(cnet_dev *d, int cpu);
void cnet_dev_stop(void *handle);
uint64_t cnet_dev_rx_frames(const cnet_dev *d);
uint64_t cnet_dev_tx_frames(const cnet_dev *d);
/* 1 when the driver handed the device something it never could have (a length too short, a bad head). */
int cnet_dev_broken(const cnet_dev *d);
/* Pins the calling thread to `cpu`. */
void cnet_pin_self(int cpu);
