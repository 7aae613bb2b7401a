"""Every line of every real capture in shared/samples maps to the expected audit record fields."""
# ruff: noqa: E501  (the tables hold one sample line per row)

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from regwarden.audit.parse import (
    NOTIFICATION_MEDIA_TYPE,
    map_docker_event,
    parse_notification_envelope,
    parse_registry_line,
)
from regwarden.events import RegistryNames

# verbatim copies of shared/samples (distribution 2.8, Docker Engine 20.10 captures)
SAMPLES = Path(__file__).parent / "samples"
OBSERVED = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)

CURL = "curl/7.88.1"
DOCKER = ("docker/20.10.24+dfsg1 go/go1.19.8 git-commit/5d6db84 kernel/6.18.44-fc-v669 os/linux arch/amd64"
          " UpstreamClient(Docker-Client/28.2.2 \\(linux\\))")
LAYER = "sha256:cb2b8c4b55cbe3e9d0eb0ae40643436fbb125c8b8db225b7d94cf3422896f897"
CONFIG = "sha256:c20c6417c3ea9e391610d8030ac83ef93aca4df9f21e4245361c3bd0058de5ba"
MANIFEST = "sha256:53ad0dde79bf908a8c53c47786469f3440276e12f5da5c2af65b9936dd2e2240"

JSON_LOG = [
    # line, kind, time, user, addr, agent, repository, tag, digest, status, outcome, request_id
    (1, 'registry.log', '2026-11-27T07:09:48.450527Z', None, None, None, None, None, None, None, 'unknown', None),
    (2, 'registry.log', '2026-11-27T07:09:48.451280Z', None, None, None, None, None, None, None, 'unknown', None),
    (3, 'registry.log', '2026-11-27T07:09:48.451304Z', None, None, None, None, None, None, None, 'unknown', None),
    (4, 'registry.log', '2026-11-27T07:09:48.451676Z', None, None, None, None, None, None, None, 'unknown', None),
    (5, 'registry.log', '2026-11-27T07:09:48.451195Z', None, None, None, None, None, None, None, 'unknown', None),
    (6, 'auth.challenge', '2026-11-27T07:09:50.451043Z', None, '127.0.0.1:45506', CURL, None, None, None, None, 'failure', '435157b4-eeb8-4925-b4c0-0fb01e17b596'),
    (7, 'registry.ping', '2026-11-27T07:09:50.000000Z', None, '127.0.0.1', CURL, None, None, None, 401, 'failure', None),
    (8, 'auth.failure', '2026-11-27T07:09:50.459987Z', 'alice', '127.0.0.1:45514', CURL, None, None, None, None, 'failure', '80c6ed5b-179c-41a5-8eb3-8644e55fe38b'),
    (9, 'auth.challenge', '2026-11-27T07:09:50.460049Z', None, '127.0.0.1:45514', CURL, None, None, None, None, 'failure', '80c6ed5b-179c-41a5-8eb3-8644e55fe38b'),
    (10, 'registry.ping', '2026-11-27T07:09:50.000000Z', None, '127.0.0.1', CURL, None, None, None, 401, 'failure', None),
    (11, 'auth.failure', '2026-11-27T07:09:50.466809Z', 'mallory', '127.0.0.1:45518', CURL, None, None, None, None, 'failure', '29eefe8d-8b84-45e5-b7c1-2f6842278b61'),
    (12, 'auth.challenge', '2026-11-27T07:09:50.466858Z', None, '127.0.0.1:45518', CURL, None, None, None, None, 'failure', '29eefe8d-8b84-45e5-b7c1-2f6842278b61'),
    (13, 'catalog.list', '2026-11-27T07:09:50.000000Z', None, '127.0.0.1', CURL, None, None, None, 401, 'failure', None),
    (14, 'auth.challenge', '2026-11-27T07:09:50.482621Z', None, '127.0.0.1:45538', DOCKER, None, None, None, None, 'failure', '260871b6-737e-4f43-bd66-e1a70ba15fd3'),
    (15, 'registry.ping', '2026-11-27T07:09:50.000000Z', None, '127.0.0.1', DOCKER, None, None, None, 401, 'failure', None),
    (16, 'registry.log', '2026-11-27T07:09:50.488466Z', None, '127.0.0.1:45552', DOCKER, None, None, None, None, 'unknown', '40525a72-2085-4ce3-8668-c5a71aa31fdc'),
    (17, 'registry.log', '2026-11-27T07:09:50.488600Z', None, '127.0.0.1:45552', DOCKER, None, None, None, 200, 'success', '40525a72-2085-4ce3-8668-c5a71aa31fdc'),
    (18, 'registry.ping', '2026-11-27T07:09:50.000000Z', None, '127.0.0.1', DOCKER, None, None, None, 200, 'success', None),
    (19, 'auth.challenge', '2026-11-27T07:09:50.512408Z', None, '127.0.0.1:45562', DOCKER, None, None, None, None, 'failure', '6a379ab0-7814-4ca8-864a-89a8aba50988'),
    (20, 'registry.ping', '2026-11-27T07:09:50.000000Z', None, '127.0.0.1', DOCKER, None, None, None, 401, 'failure', None),
    (21, 'registry.log', '2026-11-27T07:09:50.516018Z', None, '127.0.0.1:45574', DOCKER, 'team/app', None, LAYER, None, 'unknown', 'f4d24d36-c21c-4fac-b319-153e6dfb5a78'),
    (22, 'registry.log', '2026-11-27T07:09:50.516658Z', None, '127.0.0.1:45574', DOCKER, 'team/app', None, LAYER, 200, 'success', 'f4d24d36-c21c-4fac-b319-153e6dfb5a78'),
    (23, 'blob.pull', '2026-11-27T07:09:50.000000Z', None, '127.0.0.1', DOCKER, 'team/app', None, LAYER, 200, 'success', None),
    (24, 'registry.log', '2026-11-27T07:09:50.520970Z', None, '127.0.0.1:45576', DOCKER, 'team/app', None, CONFIG, None, 'unknown', 'c9241d8d-e920-4156-81f5-023df059199e'),
    (25, 'registry.log', '2026-11-27T07:09:50.521517Z', None, '127.0.0.1:45576', DOCKER, 'team/app', None, CONFIG, 200, 'success', 'c9241d8d-e920-4156-81f5-023df059199e'),
    (26, 'blob.pull', '2026-11-27T07:09:50.000000Z', None, '127.0.0.1', DOCKER, 'team/app', None, CONFIG, 200, 'success', None),
    (27, 'registry.log', '2026-11-27T07:09:50.525333Z', None, '127.0.0.1:45586', DOCKER, 'team/app', '3', None, None, 'unknown', '0bd693b0-6886-4af9-a9c5-e285d7b05b2e'),
    (28, 'registry.log', '2026-11-27T07:09:50.529331Z', None, '127.0.0.1:45586', DOCKER, 'team/app', '3', None, 201, 'success', '0bd693b0-6886-4af9-a9c5-e285d7b05b2e'),
    (29, 'image.push', '2026-11-27T07:09:50.000000Z', None, '127.0.0.1', DOCKER, 'team/app', '3', None, 201, 'success', None),
    (30, 'auth.challenge', '2026-11-27T07:09:50.553330Z', None, '127.0.0.1:45610', DOCKER, None, None, None, None, 'failure', 'c2d551c4-9f01-4887-b859-992235529d1e'),
    (31, 'registry.ping', '2026-11-27T07:09:50.000000Z', None, '127.0.0.1', DOCKER, None, None, None, 401, 'failure', None),
    (32, 'registry.log', '2026-11-27T07:09:50.556513Z', None, '127.0.0.1:45626', DOCKER, 'team/app', '3', None, None, 'unknown', '31c9412d-73c1-4a25-a4c0-ce14e95e49a6'),
    (33, 'registry.log', '2026-11-27T07:09:50.556865Z', None, '127.0.0.1:45626', DOCKER, 'team/app', '3', None, 200, 'success', '31c9412d-73c1-4a25-a4c0-ce14e95e49a6'),
    (34, 'image.pull', '2026-11-27T07:09:50.000000Z', None, '127.0.0.1', DOCKER, 'team/app', '3', None, 200, 'success', None),
    (35, 'registry.log', '2026-11-27T07:09:50.571248Z', None, '127.0.0.1:45636', CURL, 'team/app', None, None, None, 'unknown', '02af40e9-d2c9-4a92-a95c-7d3ce3641863'),
    (36, 'registry.log', '2026-11-27T07:09:50.571367Z', None, '127.0.0.1:45636', CURL, 'team/app', None, None, 200, 'success', '02af40e9-d2c9-4a92-a95c-7d3ce3641863'),
    (37, 'tags.list', '2026-11-27T07:09:50.000000Z', None, '127.0.0.1', CURL, 'team/app', None, None, 200, 'success', None),
    (38, 'registry.log', '2026-11-27T07:09:50.580254Z', None, '127.0.0.1:45642', CURL, 'team/missing', 'latest', None, None, 'unknown', '3fa50ee5-7791-4e19-beef-e380c83fc325'),
    (39, 'registry.log', '2026-11-27T07:09:50.580391Z', 'alice', '127.0.0.1:45642', CURL, 'team/missing', 'latest', None, 404, 'failure', '3fa50ee5-7791-4e19-beef-e380c83fc325'),
    (40, 'image.pull', '2026-11-27T07:09:50.000000Z', None, '127.0.0.1', CURL, 'team/missing', 'latest', None, 404, 'failure', None),
    (41, 'auth.challenge', '2026-11-27T07:09:56.761512Z', None, '127.0.0.1:48196', DOCKER, None, None, None, None, 'failure', '91fef32a-25f0-418b-ac10-8f815d3d7d34'),
    (42, 'registry.ping', '2026-11-27T07:09:56.000000Z', None, '127.0.0.1', DOCKER, None, None, None, 401, 'failure', None),
    (43, 'registry.log', '2026-11-27T07:09:56.764939Z', None, '127.0.0.1:48206', DOCKER, None, None, None, None, 'unknown', '5c5c7e6a-6767-4905-80cd-446b96e4287c'),
    (44, 'registry.log', '2026-11-27T07:09:56.765022Z', None, '127.0.0.1:48206', DOCKER, None, None, None, 200, 'success', '5c5c7e6a-6767-4905-80cd-446b96e4287c'),
    (45, 'registry.ping', '2026-11-27T07:09:56.000000Z', None, '127.0.0.1', DOCKER, None, None, None, 200, 'success', None),
    (46, 'auth.challenge', '2026-11-27T07:09:56.779561Z', None, '127.0.0.1:48226', DOCKER, None, None, None, None, 'failure', '305dcfa4-3866-4a20-a7d6-598058180005'),
    (47, 'registry.ping', '2026-11-27T07:09:56.000000Z', None, '127.0.0.1', DOCKER, None, None, None, 401, 'failure', None),
    (48, 'registry.log', '2026-11-27T07:09:56.783007Z', None, '127.0.0.1:48230', DOCKER, 'team/app', None, LAYER, None, 'unknown', '3623d807-9436-4645-9434-f9016515ac85'),
    (49, 'registry.log', '2026-11-27T07:09:56.783249Z', None, '127.0.0.1:48230', DOCKER, 'team/app', None, LAYER, 200, 'success', '3623d807-9436-4645-9434-f9016515ac85'),
    (50, 'blob.pull', '2026-11-27T07:09:56.000000Z', None, '127.0.0.1', DOCKER, 'team/app', None, LAYER, 200, 'success', None),
    (51, 'registry.log', '2026-11-27T07:09:56.786684Z', None, '127.0.0.1:48240', DOCKER, 'team/app', None, CONFIG, None, 'unknown', '2fe67e48-e012-4cfc-a317-08bf4d87a91c'),
    (52, 'registry.log', '2026-11-27T07:09:56.787136Z', None, '127.0.0.1:48240', DOCKER, 'team/app', None, CONFIG, 200, 'success', '2fe67e48-e012-4cfc-a317-08bf4d87a91c'),
    (53, 'blob.pull', '2026-11-27T07:09:56.000000Z', None, '127.0.0.1', DOCKER, 'team/app', None, CONFIG, 200, 'success', None),
    (54, 'registry.log', '2026-11-27T07:09:56.791234Z', None, '127.0.0.1:48256', DOCKER, 'team/app', '4', None, None, 'unknown', '64232b43-c3ed-48ed-baca-aeef32ddfee9'),
    (55, 'registry.log', '2026-11-27T07:09:56.794783Z', None, '127.0.0.1:48256', DOCKER, 'team/app', '4', None, 201, 'success', '64232b43-c3ed-48ed-baca-aeef32ddfee9'),
    (56, 'image.push', '2026-11-27T07:09:56.000000Z', None, '127.0.0.1', DOCKER, 'team/app', '4', None, 201, 'success', None),
    (57, 'auth.challenge', '2026-11-27T07:09:56.821279Z', None, '127.0.0.1:48270', DOCKER, None, None, None, None, 'failure', '17a2a93d-d8c6-47bf-918f-c7a42787bb54'),
    (58, 'registry.ping', '2026-11-27T07:09:56.000000Z', None, '127.0.0.1', DOCKER, None, None, None, 401, 'failure', None),
    (59, 'registry.log', '2026-11-27T07:09:56.824652Z', None, '127.0.0.1:48278', DOCKER, 'team/app', '4', None, None, 'unknown', 'd8aeba93-e177-42b2-97a4-cc5c0d6ea8bc'),
    (60, 'registry.log', '2026-11-27T07:09:56.824898Z', None, '127.0.0.1:48278', DOCKER, 'team/app', '4', None, 200, 'success', 'd8aeba93-e177-42b2-97a4-cc5c0d6ea8bc'),
    (61, 'image.pull', '2026-11-27T07:09:56.000000Z', None, '127.0.0.1', DOCKER, 'team/app', '4', None, 200, 'success', None),
]

TEXT_LOG = [
    # line, kind, time, user, addr, agent, repository, tag, digest, status, outcome, request_id
    (1, 'registry.log', '2026-11-27T07:09:48.455348Z', None, None, None, None, None, None, None, 'unknown', None),
    (2, 'registry.log', '2026-11-27T07:09:48.455395Z', None, None, None, None, None, None, None, 'unknown', None),
    (3, 'registry.log', '2026-11-27T07:09:48.455411Z', None, None, None, None, None, None, None, 'unknown', None),
    (4, 'registry.log', '2026-11-27T07:09:48.455611Z', None, None, None, None, None, None, None, 'unknown', None),
    (5, 'registry.log', '2026-11-27T07:09:48.455645Z', None, None, None, None, None, None, None, 'unknown', None),
    (6, 'auth.challenge', '2026-11-27T07:09:50.598227Z', None, '127.0.0.1:39410', CURL, None, None, None, None, 'failure', '10e95ecd-eebd-4b47-b6ca-adc68f87771a'),
    (7, 'registry.ping', '2026-11-27T07:09:50.000000Z', None, '127.0.0.1', CURL, None, None, None, 401, 'failure', None),
    (8, 'auth.failure', '2026-11-27T07:09:50.606231Z', 'alice', '127.0.0.1:39426', CURL, None, None, None, None, 'failure', 'f6fe4776-9433-4068-853d-03ebb1c4a972'),
    (9, 'auth.challenge', '2026-11-27T07:09:50.606280Z', None, '127.0.0.1:39426', CURL, None, None, None, None, 'failure', 'f6fe4776-9433-4068-853d-03ebb1c4a972'),
    (10, 'registry.ping', '2026-11-27T07:09:50.000000Z', None, '127.0.0.1', CURL, None, None, None, 401, 'failure', None),
    (11, 'auth.failure', '2026-11-27T07:09:50.612129Z', 'mallory', '127.0.0.1:39430', CURL, None, None, None, None, 'failure', '375f1678-ef78-47b7-8293-f9e955ac532c'),
    (12, 'auth.challenge', '2026-11-27T07:09:50.612220Z', None, '127.0.0.1:39430', CURL, None, None, None, None, 'failure', '375f1678-ef78-47b7-8293-f9e955ac532c'),
    (13, 'catalog.list', '2026-11-27T07:09:50.000000Z', None, '127.0.0.1', CURL, None, None, None, 401, 'failure', None),
    (14, 'auth.challenge', '2026-11-27T07:09:50.623730Z', None, '127.0.0.1:39448', DOCKER, None, None, None, None, 'failure', '4c3993c2-33b8-4f6b-9d7c-539dff852702'),
    (15, 'registry.ping', '2026-11-27T07:09:50.000000Z', None, '127.0.0.1', DOCKER, None, None, None, 401, 'failure', None),
    (16, 'registry.log', '2026-11-27T07:09:50.626403Z', None, '127.0.0.1:39452', DOCKER, None, None, None, None, 'unknown', '267c0d5b-98ba-490d-b6ab-3c7c6a5ced5d'),
    (17, 'registry.log', '2026-11-27T07:09:50.626449Z', None, '127.0.0.1:39452', DOCKER, None, None, None, 200, 'success', '267c0d5b-98ba-490d-b6ab-3c7c6a5ced5d'),
    (18, 'registry.ping', '2026-11-27T07:09:50.000000Z', None, '127.0.0.1', DOCKER, None, None, None, 200, 'success', None),
    (19, 'auth.challenge', '2026-11-27T07:09:50.651896Z', None, '127.0.0.1:39472', DOCKER, None, None, None, None, 'failure', 'c4915dd9-0ae0-47a8-ba60-ca764c704306'),
    (20, 'registry.ping', '2026-11-27T07:09:50.000000Z', None, '127.0.0.1', DOCKER, None, None, None, 401, 'failure', None),
    (21, 'registry.log', '2026-11-27T07:09:50.656118Z', None, '127.0.0.1:39484', DOCKER, 'team/app', None, LAYER, None, 'unknown', 'dc7282d2-050e-44ef-9f2c-2962ca2ac8b2'),
    (22, 'registry.log', '2026-11-27T07:09:50.656471Z', None, '127.0.0.1:39484', DOCKER, 'team/app', None, LAYER, 200, 'success', 'dc7282d2-050e-44ef-9f2c-2962ca2ac8b2'),
    (23, 'blob.pull', '2026-11-27T07:09:50.000000Z', None, '127.0.0.1', DOCKER, 'team/app', None, LAYER, 200, 'success', None),
    (24, 'registry.log', '2026-11-27T07:09:50.662916Z', None, '127.0.0.1:39492', DOCKER, 'team/app', None, CONFIG, None, 'unknown', 'cfa36009-5aaf-446f-b0ae-aef726b41a50'),
    (25, 'registry.log', '2026-11-27T07:09:50.663121Z', None, '127.0.0.1:39492', DOCKER, 'team/app', None, CONFIG, 200, 'success', 'cfa36009-5aaf-446f-b0ae-aef726b41a50'),
    (26, 'blob.pull', '2026-11-27T07:09:50.000000Z', None, '127.0.0.1', DOCKER, 'team/app', None, CONFIG, 200, 'success', None),
    (27, 'registry.log', '2026-11-27T07:09:50.665579Z', None, '127.0.0.1:39498', DOCKER, 'team/app', '3', None, None, 'unknown', 'e4a3c673-062f-4ddf-a43a-f39cf0272378'),
    (28, 'registry.log', '2026-11-27T07:09:50.670726Z', None, '127.0.0.1:39498', DOCKER, 'team/app', '3', None, 201, 'success', 'e4a3c673-062f-4ddf-a43a-f39cf0272378'),
    (29, 'image.push', '2026-11-27T07:09:50.000000Z', None, '127.0.0.1', DOCKER, 'team/app', '3', None, 201, 'success', None),
    (30, 'auth.challenge', '2026-11-27T07:09:50.699909Z', None, '127.0.0.1:39520', DOCKER, None, None, None, None, 'failure', '7ff1d8ea-6f01-4917-8193-5e72b5667afd'),
    (31, 'registry.ping', '2026-11-27T07:09:50.000000Z', None, '127.0.0.1', DOCKER, None, None, None, 401, 'failure', None),
    (32, 'registry.log', '2026-11-27T07:09:50.703119Z', None, '127.0.0.1:39528', DOCKER, 'team/app', '3', None, None, 'unknown', '0e5579b1-7766-4910-9243-15fc2aebf418'),
    (33, 'registry.log', '2026-11-27T07:09:50.703433Z', None, '127.0.0.1:39528', DOCKER, 'team/app', '3', None, 200, 'success', '0e5579b1-7766-4910-9243-15fc2aebf418'),
    (34, 'image.pull', '2026-11-27T07:09:50.000000Z', None, '127.0.0.1', DOCKER, 'team/app', '3', None, 200, 'success', None),
    (35, 'registry.log', '2026-11-27T07:09:50.719210Z', None, '127.0.0.1:39544', CURL, 'team/app', None, None, None, 'unknown', '8c09c4be-a9d8-4f81-89bf-7a4f8eebb290'),
    (36, 'registry.log', '2026-11-27T07:09:50.719330Z', None, '127.0.0.1:39544', CURL, 'team/app', None, None, 200, 'success', '8c09c4be-a9d8-4f81-89bf-7a4f8eebb290'),
    (37, 'tags.list', '2026-11-27T07:09:50.000000Z', None, '127.0.0.1', CURL, 'team/app', None, None, 200, 'success', None),
    (38, 'registry.log', '2026-11-27T07:09:50.728833Z', None, '127.0.0.1:39560', CURL, 'team/missing', 'latest', None, None, 'unknown', '70e11111-bf64-45c2-9b7c-fa2c7414a209'),
    (39, 'registry.log', '2026-11-27T07:09:50.729008Z', 'alice', '127.0.0.1:39560', CURL, 'team/missing', 'latest', None, 404, 'failure', '70e11111-bf64-45c2-9b7c-fa2c7414a209'),
    (40, 'image.pull', '2026-11-27T07:09:50.000000Z', None, '127.0.0.1', CURL, 'team/missing', 'latest', None, 404, 'failure', None),
]

NOTIFICATIONS = [
    # line, id, kind, time, user, addr, registry, repository, tag, digest, request_id
    (1, 'd51a1f09-6f1a-4244-9f11-9f5d95eb8ae7', 'blob.pull', '2026-11-27T07:09:50.516587Z', 'alice', '127.0.0.1:45574', '127.0.0.1:5000', 'team/app', None, LAYER, 'f4d24d36-c21c-4fac-b319-153e6dfb5a78'),
    (2, '549ed725-b8d0-474d-b969-2fcad998cf4f', 'blob.pull', '2026-11-27T07:09:50.521448Z', 'alice', '127.0.0.1:45576', '127.0.0.1:5000', 'team/app', None, CONFIG, 'c9241d8d-e920-4156-81f5-023df059199e'),
    (3, 'bca1e1fc-d6c0-4031-ab36-764c1cc9b2ea', 'image.push', '2026-11-27T07:09:50.526859Z', 'alice', '127.0.0.1:45586', '127.0.0.1:5000', 'team/app', '3', MANIFEST, '0bd693b0-6886-4af9-a9c5-e285d7b05b2e'),
    (4, 'f6f34e4c-d94b-4cd7-a36b-240d82d7b9f9', 'image.pull', '2026-11-27T07:09:50.556777Z', 'alice', '127.0.0.1:45626', '127.0.0.1:5000', 'team/app', '3', MANIFEST, '31c9412d-73c1-4a25-a4c0-ce14e95e49a6'),
    (5, '7e20b511-bd74-465d-a0b8-41a054a04ecd', 'blob.pull', '2026-11-27T07:09:50.656426Z', 'alice', '127.0.0.1:39484', '127.0.0.1:5001', 'team/app', None, LAYER, 'dc7282d2-050e-44ef-9f2c-2962ca2ac8b2'),
    (6, '7e56dbac-6324-4bac-8517-998b10072c79', 'blob.pull', '2026-11-27T07:09:50.663101Z', 'alice', '127.0.0.1:39492', '127.0.0.1:5001', 'team/app', None, CONFIG, 'cfa36009-5aaf-446f-b0ae-aef726b41a50'),
    (7, '283a132a-ebba-46ac-94db-9d719e9cdb14', 'image.push', '2026-11-27T07:09:50.667104Z', 'alice', '127.0.0.1:39498', '127.0.0.1:5001', 'team/app', '3', MANIFEST, 'e4a3c673-062f-4ddf-a43a-f39cf0272378'),
    (8, '826afbee-732c-49eb-9a48-c12950841e47', 'image.pull', '2026-11-27T07:09:50.703314Z', 'alice', '127.0.0.1:39528', '127.0.0.1:5001', 'team/app', '3', MANIFEST, '0e5579b1-7766-4910-9243-15fc2aebf418'),
    (9, '977b3b0f-aeb2-4344-a3ef-3f56e015217a', 'blob.pull', '2026-11-27T07:09:56.783202Z', 'alice', '127.0.0.1:48230', '127.0.0.1:5000', 'team/app', None, LAYER, '3623d807-9436-4645-9434-f9016515ac85'),
    (10, '9f753b07-4bf0-4502-8d10-10d8c341a916', 'blob.pull', '2026-11-27T07:09:56.786859Z', 'alice', '127.0.0.1:48240', '127.0.0.1:5000', 'team/app', None, CONFIG, '2fe67e48-e012-4cfc-a317-08bf4d87a91c'),
    (11, 'bc6f797a-7f53-4b02-9294-2d7efffbf411', 'image.push', '2026-11-27T07:09:56.792198Z', 'alice', '127.0.0.1:48256', '127.0.0.1:5000', 'team/app', '4', MANIFEST, '64232b43-c3ed-48ed-baca-aeef32ddfee9'),
    (12, '07d8531a-6aec-473a-a210-779e072bbef4', 'image.pull', '2026-11-27T07:09:56.824849Z', 'alice', '127.0.0.1:48278', '127.0.0.1:5000', 'team/app', '4', MANIFEST, 'd8aeba93-e177-42b2-97a4-cc5c0d6ea8bc'),
]

DOCKER_EVENTS = [
    # line, kind, time, registry, repository, tag, outcome
    (1, 'volume.create', '2026-11-27T07:09:56.098438Z', None, None, None, 'success'),
    (2, 'network.create', '2026-11-27T07:09:56.119788Z', None, None, None, 'success'),
    (3, 'container.create', '2026-11-27T07:09:56.141164Z', 'docker.io', 'library/tiny', '1', 'success'),
    (4, 'network.connect', '2026-11-27T07:09:56.147563Z', None, None, None, 'success'),
    (5, 'container.start', '2026-11-27T07:09:56.291490Z', 'docker.io', 'library/tiny', '1', 'success'),
    (6, 'container.exec_create', '2026-11-27T07:09:56.306030Z', 'docker.io', 'library/tiny', '1', 'success'),
    (7, 'container.exec_start', '2026-11-27T07:09:56.306645Z', 'docker.io', 'library/tiny', '1', 'success'),
    (8, 'container.exec_die', '2026-11-27T07:09:56.342409Z', 'docker.io', 'library/tiny', '1', 'success'),
    (9, 'container.kill', '2026-11-27T07:09:56.368722Z', 'docker.io', 'library/tiny', '1', 'success'),
    (10, 'container.die', '2026-11-27T07:09:56.388842Z', 'docker.io', 'library/tiny', '1', 'failure'),
    (11, 'network.disconnect', '2026-11-27T07:09:56.395801Z', None, None, None, 'success'),
    (12, 'container.destroy', '2026-11-27T07:09:56.429100Z', 'docker.io', 'library/tiny', '1', 'success'),
    (13, 'container.create', '2026-11-27T07:09:56.453211Z', 'docker.io', 'library/tiny', '1', 'success'),
    (14, 'container.attach', '2026-11-27T07:09:56.454618Z', 'docker.io', 'library/tiny', '1', 'success'),
    (15, 'network.connect', '2026-11-27T07:09:56.462139Z', None, None, None, 'success'),
    (16, 'container.start', '2026-11-27T07:09:56.633983Z', 'docker.io', 'library/tiny', '1', 'success'),
    (17, 'container.die', '2026-11-27T07:09:56.649750Z', 'docker.io', 'library/tiny', '1', 'failure'),
    (18, 'network.disconnect', '2026-11-27T07:09:56.651884Z', None, None, None, 'success'),
    (19, 'container.destroy', '2026-11-27T07:09:56.658540Z', 'docker.io', 'library/tiny', '1', 'success'),
    (20, 'volume.destroy', '2026-11-27T07:09:56.669791Z', None, None, None, 'success'),
    (21, 'network.destroy', '2026-11-27T07:09:56.733768Z', None, None, None, 'success'),
    (22, 'image.tag', '2026-11-27T07:09:56.746950Z', '127.0.0.1:5000', 'team/app', '4', 'success'),
    (23, 'image.push', '2026-11-27T07:09:56.795165Z', '127.0.0.1:5000', 'team/app', None, 'success'),
    (24, 'image.untag', '2026-11-27T07:09:56.806214Z', None, None, None, 'success'),
    (25, 'image.pull', '2026-11-27T07:09:56.831339Z', '127.0.0.1:5000', 'team/app', None, 'success'),
]


def _lines(name: str) -> list[bytes]:
    return (SAMPLES / name).read_bytes().splitlines(keepends=True)


def _check_log(name: str, table: list[tuple[Any, ...]]) -> None:
    lines = _lines(name)
    assert len(lines) == len(table), "the table must cover every line of the sample"
    for row in table:
        number = row[0]
        event = parse_registry_line(lines[number - 1], registry="internal", host="h1", observed=OBSERVED)
        record = event.record()
        got = (number, event.kind, record["time"], event.actor.user, event.actor.addr, event.actor.agent,
               event.target.repository, event.target.tag, event.target.digest, event.status, event.outcome,
               event.request_id)
        assert got == row, f"{name}:{number}"
        assert event.source == "registry-log" and event.host == "h1"
        assert event.target.registry == "internal" and event.observed == OBSERVED


def test_json_log_sample_lines_map_to_records() -> None:
    """Each line of the JSON-formatter log (records and access lines) maps to the expected fields."""
    _check_log("distribution-2.8-json.log", JSON_LOG)


def test_text_log_sample_lines_map_to_records() -> None:
    """Each line of the text-formatter (logfmt) log maps to the expected fields."""
    _check_log("distribution-2.8-text.log", TEXT_LOG)


def test_json_and_text_records_of_one_request_agree() -> None:
    """The JSON and logfmt formatters of the same record yield the same kind, actor and target."""
    json_lines = _lines("distribution-2.8-json.log")
    text_lines = _lines("distribution-2.8-text.log")
    pairs = [(1, 1), (6, 6), (8, 8), (21, 21), (27, 27), (39, 39)]
    for j, t in pairs:
        a = parse_registry_line(json_lines[j - 1], registry="r", host="h", observed=OBSERVED)
        b = parse_registry_line(text_lines[t - 1], registry="r", host="h", observed=OBSERVED)
        assert (a.kind, a.actor.user, a.actor.agent, a.target, a.status, a.outcome) == (
            b.kind, b.actor.user, b.actor.agent, b.target, b.status, b.outcome), (j, t)
        assert a.detail["msg"] == b.detail["msg"] and a.detail["level"] == b.detail["level"]


def test_access_line_keeps_method_uri_and_size() -> None:
    """An access line keeps the method, URI, protocol and response size in detail."""
    line = _lines("distribution-2.8-json.log")[28]
    event = parse_registry_line(line, registry="internal", host="h", observed=OBSERVED)
    assert event.detail == {"format": "access", "method": "PUT", "uri": "/v2/team/app/manifests/3",
                            "proto": "HTTP/1.1", "bytes": 0}


def test_generic_record_keeps_level_msg_and_other_fields() -> None:
    """A generic record keeps level, msg and its unmapped fields (error code, duration) in detail."""
    event = parse_registry_line(_lines("distribution-2.8-json.log")[38], registry="r", host="h", observed=OBSERVED)
    assert event.detail["level"] == "error"
    assert event.detail["msg"] == "response completed with error"
    assert event.detail["fields"]["err.code"] == "manifest unknown"
    assert event.detail["fields"]["http.response.duration"] == "2.9578ms"
    assert "go.version" not in event.detail["fields"]


def test_auth_challenge_keeps_the_reason() -> None:
    """An `error authorizing context` record keeps the registry's reason."""
    event = parse_registry_line(_lines("distribution-2.8-text.log")[5], registry="r", host="h", observed=OBSERVED)
    assert event.kind == "auth.challenge"
    assert event.detail["reason"] == "invalid authorization credential"


def _envelopes() -> list[dict[str, Any]]:
    return [json.loads(line) for line in _lines("notifications-envelopes.jsonl")]


def test_notification_sample_headers_name_the_media_type() -> None:
    """Every captured envelope was posted with distribution's events media type."""
    for envelope in _envelopes():
        assert envelope["headers"]["Content-Type"] == NOTIFICATION_MEDIA_TYPE


def test_notification_sample_envelopes_map_to_records() -> None:
    """Each captured envelope maps to the expected events (id, kind, actor, target, request id)."""
    got = []
    for number, envelope in enumerate(_envelopes(), 1):
        for event in parse_notification_envelope(json.dumps(envelope["body"]).encode(), host="h1",
                                                 observed=OBSERVED):
            assert event.source == "registry-notify" and event.outcome == "success"
            assert event.actor.agent == DOCKER
            got.append((number, event.id, event.kind, event.record()["time"], event.actor.user, event.actor.addr,
                        event.target.registry, event.target.repository, event.target.tag, event.target.digest,
                        event.request_id))
    assert got == NOTIFICATIONS


def test_notification_request_id_joins_the_log_record() -> None:
    """A notification's request id is the `http.request.id` of the registry's log records."""
    log_ids = {parse_registry_line(line, registry="r", host="h", observed=OBSERVED).request_id
               for line in _lines("distribution-2.8-json.log")}
    push = NOTIFICATIONS[2]
    assert push[2] == "image.push" and push[10] in log_ids


def test_docker_sample_events_map_to_records() -> None:
    """Each captured engine event maps to the expected kind, time, target and outcome."""
    lines = _lines("engine-20.10-events.jsonl")
    assert len(lines) == len(DOCKER_EVENTS)
    for row in DOCKER_EVENTS:
        raw = json.loads(lines[row[0] - 1])
        event = map_docker_event(raw, host="h1", observed=OBSERVED)
        assert event is not None
        record = event.record()
        assert (row[0], event.kind, record["time"], event.target.registry, event.target.repository,
                event.target.tag, event.outcome) == row
        assert event.id == f"{raw['timeNano']}:{raw['Actor']['ID']}:{raw['Action']}"
        assert event.source == "docker" and event.host == "h1"


@pytest.mark.parametrize(("number", "key", "value"), [
    (6, "argument", "/bin/busybox true"),
    (10, "attributes", {"exitCode": "137", "image": "tiny:1", "name": "web1"}),
    (22, "image_id", CONFIG),
    (9, "actor_id", "cda26fae8c70dc7b1e8d26a84313bf69eff17a4c9a7920fe5c19669bb8546e4c"),
])
def test_docker_event_detail(number: int, key: str, value: Any) -> None:
    """Engine event details keep the action argument, attributes, image id and actor id."""
    raw = json.loads(_lines("engine-20.10-events.jsonl")[number - 1])
    event = map_docker_event(raw, host="h", observed=OBSERVED)
    assert event is not None and event.detail[key] == value


def test_every_source_names_a_configured_registry_alike() -> None:
    """With `127.0.0.1:5000` configured as "local", log lines, notifications and engine events of the
    captures all say `target.registry == "local"` and `target.address == "127.0.0.1:5000"`; the other
    registries of the captures (docker.io, 127.0.0.1:5001) keep their address as their name."""
    names = RegistryNames([("local", "127.0.0.1:5000")])
    targets: set[tuple[str, str]] = set()
    for line in (SAMPLES / "distribution-2.8-json.log").read_bytes().splitlines():
        event = parse_registry_line(line, registry="local", address="127.0.0.1:5000", host="h", observed=OBSERVED)
        targets.add((event.target.registry or "", event.target.address or ""))
    for line in (SAMPLES / "notifications-envelopes.jsonl").read_text().splitlines():
        body = json.dumps(json.loads(line)["body"]).encode()
        for event in parse_notification_envelope(body, host="h", observed=OBSERVED, names=names):
            targets.add((event.target.registry or "", event.target.address or ""))
    pulled: list[str] = []
    for line in (SAMPLES / "engine-20.10-events.jsonl").read_text().splitlines():
        event = map_docker_event(json.loads(line), host="h", observed=OBSERVED, names=names)
        if event is not None and event.target.address is not None:
            targets.add((event.target.registry or "", event.target.address))
            pulled.append(event.kind)
    assert targets == {("local", "127.0.0.1:5000"), ("docker.io", "docker.io"), ("127.0.0.1:5001", "127.0.0.1:5001")}
    assert "image.push" in pulled
    other = map_docker_event({"Type": "image", "Action": "pull", "Actor": {"ID": "quay.io/team/x:1"},
                              "timeNano": 1}, host="h", names=names)
    assert other is not None and other.record()["target"] == {
        "registry": "quay.io", "address": "quay.io", "repository": "team/x", "tag": "1"}
