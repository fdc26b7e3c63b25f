/* placeholder: replaced by the kernel-path shim */
