{
  "targets": [
    {
      "target_name": "dmsnap",
      "sources": [
        "native/addon.cc",
        "native/block_device.cc",
        "native/block_device_binding.cc",
        "native/control_binding.cc",
        "native/device_handle.cc",
        "native/device_handle_binding.cc",
        "native/dm_control.cc",
        "native/event_poll.cc",
        "native/file_lock.cc",
        "native/file_space.cc",
        "native/freeze.cc",
        "native/freeze_binding.cc",
        "native/freeze_suspend.cc",
        "native/guardian.cc",
        "native/libblkid.cc",
        "native/loop.cc",
        "native/loop_binding.cc",
        "native/mount.cc",
        "native/signature_probe.cc",
        "native/signature_probe_binding.cc",
        "native/system_binding.cc",
        "native/udev_binding.cc",
        "native/udev_cookie.cc"
      ],
      "libraries": ["-ldl"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    },
    {
      "target_name": "dmsnap-guardian",
      "type": "executable",
      "sources": ["native/guardian_main.cc", "native/dm_control.cc"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra"]
    }
  ]
}
