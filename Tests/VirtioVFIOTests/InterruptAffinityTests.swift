import XCTest

@testable import VirtioVFIO

/// Where a queue's interrupt goes: the vector's IRQ found by vfio-pci's name
/// for it in /proc/interrupts, then the first CPU of its effective affinity.
final class InterruptAffinityTests: XCTestCase {
  // As a 2-vCPU guest printed it during issue 17's benchmark.
  let table = """
               CPU0       CPU1
      56:          0          0  IR-PCI-MSI 32768-edge      vfio-msix[0](0000:00:02.0)
      57:          0      10033  IR-PCI-MSI 32769-edge      vfio-msix[1](0000:00:02.0)
     157:          7          0  IR-PCI-MSI 32769-edge      vfio-msix[11](0000:00:02.0)
      61:       2121          0  IR-PCI-MSI 32769-edge      virtio1-req.0
    """

  func testFindsTheVectorsIRQByName() {
    XCTAssertEqual(InterruptAffinity.irq(named: "vfio-msix[1](0000:00:02.0)", in: table), 57)
    XCTAssertEqual(InterruptAffinity.irq(named: "vfio-msix[11](0000:00:02.0)", in: table), 157)
    XCTAssertEqual(InterruptAffinity.irq(named: "vfio-msix[0](0000:00:02.0)", in: table), 56)
  }

  func testAnotherFunctionOrVectorIsNotFound() {
    XCTAssertNil(InterruptAffinity.irq(named: "vfio-msix[1](0000:00:03.0)", in: table))
    XCTAssertNil(InterruptAffinity.irq(named: "vfio-msix[2](0000:00:02.0)", in: table))
  }

  func testFirstCPUOfACPUList() {
    XCTAssertEqual(InterruptAffinity.firstCPU(of: "1\n"), 1)
    XCTAssertEqual(InterruptAffinity.firstCPU(of: "0-1\n"), 0)
    XCTAssertEqual(InterruptAffinity.firstCPU(of: "12,14"), 12)
    XCTAssertNil(InterruptAffinity.firstCPU(of: "\n"))
  }
}
