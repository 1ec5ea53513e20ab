# Vendored test fixture: facebookresearch/co-tracker @ 82e02e8029753ad4ef13cf06be7f4fc5facdda4d, licensed CC BY-NC 4.0
# (LICENSE.md in this folder, https://creativecommons.org/licenses/by-nc/4.0/), the torch-hub code VBench-2.0's Camera_Motion
# loads with torch.hub.load("facebookresearch/co-tracker", "cotracker2").  Verbatim below this header.
# Copyright (c) Meta Platforms, Inc. and affiliates.
# All rights reserved.

# This source code is licensed under the license found in the
# LICENSE file in the root directory of this source tree.
