"""ModelRegistry on SQLite and PostgreSQL: version numbering, lookups by number, alias and
`latest`, pagination, aliases, deletion of versions and models, and loading what was stored."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sklearn.cluster import KMeans

from app.errors import AliasNotFound, InvalidInput, ModelNotFound, VersionNotFound
from app.registry.artifacts import ArtifactStore
from app.registry.cache import ModelCache
from app.registry.model_registry import ModelRegistry
from tests.registry.conftest import artifact_files, count_rows

# Deletes ordered wrongly show up as SAWarnings ("expected to delete 2 rows; 0 were matched").
pytestmark = pytest.mark.filterwarnings("error::sqlalchemy.exc.SAWarning")


def test_versions_are_numbered_from_one(registry, trained):
    started = datetime.now(UTC) - timedelta(seconds=5)
    versions = [
        registry.register("line-7", trained(n_clusters=k).new, trained(n_clusters=k).model)
        for k in (2, 3, 4)
    ]
    assert [v.version for v in versions] == [1, 2, 3]
    assert [v.params["n_clusters"] for v in versions] == [2, 3, 4]
    first = versions[0]
    assert first.name == "line-7"
    assert first.algorithm == "kmeans"
    assert first.aliases == []
    assert first.n_samples == 120 and first.n_features == 2
    assert first.created_at.tzinfo is not None
    assert started <= first.created_at <= datetime.now(UTC) + timedelta(seconds=5)
    # Another name starts its own sequence.
    other = registry.register("line-8", trained().new, trained().model)
    assert other.version == 1


def test_stored_metadata_round_trips(registry, trained):
    model = trained(n_clusters=3, description="week 47", tags={"line": "7"})
    stored = registry.register("line-7", model.new, model.model)
    found = registry.get_version("line-7", 1)
    assert found == stored
    new = model.new
    assert found.params == new.params
    assert found.metrics == new.metrics
    assert found.anomaly == new.anomaly
    assert found.operations == new.operations
    assert found.library_versions == new.library_versions
    assert found.training_seconds == pytest.approx(new.training_seconds)
    assert found.description == "week 47"
    assert found.tags == {"line": "7"}
    assert found.feature_names is None


def test_get_version_by_number_alias_and_latest(registry, trained):
    for k in (2, 3, 4):
        registry.register("line-7", trained(n_clusters=k).new, trained(n_clusters=k).model)
    registry.set_alias("line-7", "production", 2)
    assert registry.get_version("line-7", 1).version == 1
    assert registry.get_version("line-7", "3").version == 3
    assert registry.get_version("line-7", "production").version == 2
    assert registry.get_version("line-7", "production").aliases == ["production"]
    assert registry.get_version("line-7", "latest").version == 3
    assert registry.get_version("line-7").version == 3


def test_lookups_of_what_does_not_exist(registry, trained):
    with pytest.raises(ModelNotFound):
        registry.get_version("nope", "latest")
    with pytest.raises(ModelNotFound):
        registry.get_model("nope")
    with pytest.raises(ModelNotFound):
        registry.list_versions("nope", offset=0, limit=10)
    registry.register("line-7", trained().new, trained().model)
    with pytest.raises(VersionNotFound, match="no version 2"):
        registry.get_version("line-7", 2)
    with pytest.raises(VersionNotFound, match="no alias 'production'"):
        registry.get_version("line-7", "production")
    with pytest.raises(VersionNotFound):
        registry.get_version("line-7", 0)


def test_list_versions_paginates_oldest_first(registry, trained):
    for k in (2, 3, 4, 5, 6):
        registry.register("line-7", trained(n_clusters=k).new, trained(n_clusters=k).model)
    registry.register("line-8", trained().new, trained().model)
    registry.set_alias("line-7", "candidate", 4)

    page, total = registry.list_versions("line-7", offset=0, limit=2)
    assert total == 5
    assert [v.version for v in page] == [1, 2]
    page, total = registry.list_versions("line-7", offset=2, limit=2)
    assert total == 5
    assert [v.version for v in page] == [3, 4]
    assert page[1].aliases == ["candidate"]
    page, total = registry.list_versions("line-7", offset=4, limit=2)
    assert (total, [v.version for v in page]) == (5, [5])
    page, total = registry.list_versions("line-7", offset=10, limit=2)
    assert (total, page) == (5, [])


def test_list_models_paginates_by_name(registry, trained):
    for name in ("c-model", "a-model", "b-model"):
        registry.register(name, trained().new, trained().model)
    registry.register("a-model", trained(n_clusters=2).new, trained(n_clusters=2).model)
    registry.set_alias("a-model", "production", 1)

    page, total = registry.list_models(offset=0, limit=2)
    assert total == 3
    assert [m.name for m in page] == ["a-model", "b-model"]
    first = page[0]
    assert (first.latest_version, first.n_versions) == (2, 2)
    assert first.aliases == {"production": 1}
    assert first.algorithm == "kmeans"
    page, total = registry.list_models(offset=2, limit=2)
    assert (total, [m.name for m in page]) == (3, ["c-model"])
    page, total = registry.list_models(offset=3, limit=2)
    assert (total, page) == (3, [])


def test_get_model_summarises_versions_and_aliases(registry, trained):
    for k in (2, 3):
        registry.register("line-7", trained(n_clusters=k).new, trained(n_clusters=k).model)
    registry.set_alias("line-7", "production", 1)
    registry.set_alias("line-7", "candidate", 2)
    summary = registry.get_model("line-7")
    assert summary.name == "line-7"
    assert summary.latest_version == 2
    assert summary.n_versions == 2
    assert summary.aliases == {"candidate": 2, "production": 1}
    assert summary.created_at.tzinfo is not None


def test_set_alias_moves_it(registry, trained):
    for k in (2, 3):
        registry.register("line-7", trained(n_clusters=k).new, trained(n_clusters=k).model)
    assert registry.set_alias("line-7", "production", 1).aliases == ["production"]
    moved = registry.set_alias("line-7", "production", 2)
    assert (moved.version, moved.aliases) == (2, ["production"])
    assert registry.get_version("line-7", "production").version == 2
    assert registry.get_version("line-7", 1).aliases == []
    assert registry.get_model("line-7").aliases == {"production": 2}
    # Two aliases on one version, listed in order.
    assert registry.set_alias("line-7", "candidate", 2).aliases == ["candidate", "production"]


def test_set_alias_refuses_bad_names_and_missing_targets(registry, trained):
    registry.register("line-7", trained().new, trained().model)
    for bad in ("latest", "1st", "", "with space", "x" * 65):
        with pytest.raises(InvalidInput):
            registry.set_alias("line-7", bad, 1)
    with pytest.raises(VersionNotFound):
        registry.set_alias("line-7", "production", 2)
    with pytest.raises(ModelNotFound):
        registry.set_alias("nope", "production", 1)
    assert registry.get_model("line-7").aliases == {}


def test_delete_alias(registry, trained):
    registry.register("line-7", trained().new, trained().model)
    registry.set_alias("line-7", "production", 1)
    registry.delete_alias("line-7", "production")
    with pytest.raises(VersionNotFound):
        registry.get_version("line-7", "production")
    assert registry.get_version("line-7", 1).aliases == []
    with pytest.raises(AliasNotFound):
        registry.delete_alias("line-7", "production")
    with pytest.raises(ModelNotFound):
        registry.delete_alias("nope", "production")


def test_delete_version_removes_row_artifact_aliases_and_cache_entry(
    registry, engine, trained, points
):
    versions = [
        registry.register("line-7", trained(n_clusters=k).new, trained(n_clusters=k).model)
        for k in (2, 3, 4)
    ]
    registry.set_alias("line-7", "production", 2)
    registry.set_alias("line-7", "candidate", 3)
    doomed = versions[1]
    registry.load(doomed)
    assert registry.cached(doomed) is not None
    assert count_rows(engine, "aliases") == 2

    deleted = registry.delete_version("line-7", "production")

    assert deleted.version == 2
    assert not (registry.store.root / doomed.artifact_path).exists()
    assert registry.cached(doomed) is None
    with pytest.raises(VersionNotFound):
        registry.get_version("line-7", 2)
    with pytest.raises(VersionNotFound):
        registry.get_version("line-7", "production")
    assert count_rows(engine, "model_versions") == 2
    assert count_rows(engine, "aliases") == 1
    assert registry.get_model("line-7").aliases == {"candidate": 3}
    # The other versions keep their numbers, artifacts and cache entries.
    remaining, total = registry.list_versions("line-7", offset=0, limit=10)
    assert (total, [v.version for v in remaining]) == (2, [1, 3])
    assert [p.name for p in artifact_files(registry)] == sorted(
        p.rsplit("/", 1)[-1] for p in (versions[0].artifact_path, versions[2].artifact_path)
    )
    assert registry.cached(versions[2]) is not None
    np.testing.assert_array_equal(
        registry.load(versions[0]).predict(points), trained(n_clusters=2).model.predict(points)
    )


def test_delete_latest_version_makes_the_previous_one_latest(registry, trained):
    for k in (2, 3):
        registry.register("line-7", trained(n_clusters=k).new, trained(n_clusters=k).model)
    registry.delete_version("line-7", "latest")
    assert registry.get_version("line-7", "latest").version == 1
    assert registry.get_model("line-7").latest_version == 1


def test_a_deleted_version_number_is_never_given_again(registry, trained):
    for k in (2, 3, 4):
        registry.register("line-7", trained(n_clusters=k).new, trained(n_clusters=k).model)
    registry.delete_version("line-7", 3)
    registry.delete_version("line-7", 2)
    assert registry.register("line-7", trained().new, trained().model).version == 4
    with pytest.raises(VersionNotFound):
        registry.get_version("line-7", 3)
    versions, total = registry.list_versions("line-7", offset=0, limit=10)
    assert (total, [v.version for v in versions]) == (2, [1, 4])


def test_delete_version_of_what_does_not_exist(registry, trained):
    with pytest.raises(ModelNotFound):
        registry.delete_version("nope", 1)
    registry.register("line-7", trained().new, trained().model)
    with pytest.raises(VersionNotFound):
        registry.delete_version("line-7", 2)
    with pytest.raises(VersionNotFound):
        registry.delete_version("line-7", "production")
    assert registry.get_model("line-7").n_versions == 1


def test_delete_model_removes_everything(registry, engine, trained):
    versions = [
        registry.register("line-7", trained(n_clusters=k).new, trained(n_clusters=k).model)
        for k in (2, 3)
    ]
    kept = registry.register("line-8", trained().new, trained().model)
    registry.set_alias("line-7", "production", 1)
    for version in versions:
        registry.load(version)

    deleted = registry.delete_model("line-7")

    assert sorted(v.version for v in deleted) == [1, 2]
    with pytest.raises(ModelNotFound):
        registry.get_model("line-7")
    with pytest.raises(ModelNotFound):
        registry.get_version("line-7", "latest")
    assert all(registry.cached(v) is None for v in versions)
    assert count_rows(engine, "models") == 1
    assert count_rows(engine, "model_versions") == 1
    assert count_rows(engine, "aliases") == 0
    assert artifact_files(registry) == [registry.store.root / kept.artifact_path]
    with pytest.raises(ModelNotFound):
        registry.delete_model("line-7")
    # The name is free again and starts from version 1.
    assert registry.register("line-7", trained().new, trained().model).version == 1


def test_loaded_model_predicts_as_the_original(registry, engine, store_root, trained, points):
    original = trained(n_clusters=3, seed=1)
    version = registry.register("line-7", original.new, original.model)
    # A registry with an empty cache must read the artifact from disk.
    fresh = ModelRegistry(engine, ArtifactStore(store_root), ModelCache(4))
    assert fresh.cached(version) is None
    loaded = fresh.load(fresh.get_version("line-7", 1))
    assert loaded is not original.model
    np.testing.assert_array_equal(loaded.predict(points), original.model.predict(points))
    np.testing.assert_allclose(loaded.transform(points), original.model.transform(points))
    reference = KMeans(n_clusters=3, n_init=3, random_state=1).fit(points)
    np.testing.assert_array_equal(loaded.predict(points), reference.predict(points))


def test_artifact_on_disk_matches_the_recorded_sha256_and_size(registry, trained):
    version = registry.register("line-7", trained().new, trained().model)
    path = registry.store.root / version.artifact_path
    assert path.is_file()
    assert path.parent == registry.store.folder
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == version.artifact_sha256
    assert len(data) == version.artifact_size
    # Artifact names are random: nothing the client chose becomes part of a path.
    assert "line-7" not in version.artifact_path
    assert not [p for p in artifact_files(registry) if p.name.startswith(".tmp-")]


@pytest.mark.parametrize(
    "ref",
    ["2147483648", "99999999999999999999", "²", "\u0661", "prod\x00", "prod\n", "no alias"],
)
def test_refs_no_version_can_have_are_not_found(registry, trained, ref):
    """Numbers past the database's integer, non-ASCII digits and text PostgreSQL cannot hold
    name no version: not found, never a database error."""
    registry.register("line-7", trained().new, trained().model)
    registry.set_alias("line-7", "prod", 1)
    with pytest.raises(VersionNotFound):
        registry.get_version("line-7", ref)
    with pytest.raises(VersionNotFound):
        registry.delete_version("line-7", ref)
    with pytest.raises(AliasNotFound):
        registry.delete_alias("line-7", ref)
    assert registry.get_version("line-7", "prod").version == 1


@pytest.mark.parametrize("version", [2**31, 2**70])
def test_alias_to_a_version_past_the_database_integer_is_not_found(registry, trained, version):
    registry.register("line-7", trained().new, trained().model)
    with pytest.raises(VersionNotFound):
        registry.set_alias("line-7", "production", version)


def test_names_with_nul_are_not_found(registry, trained):
    registry.register("line-7", trained().new, trained().model)
    for call in (
        lambda: registry.get_model("line-7\x00"),
        lambda: registry.get_version("line-7\x00", 1),
        lambda: registry.delete_model("line-7\x00"),
        lambda: registry.delete_alias("line-7\x00", "production"),
    ):
        with pytest.raises(ModelNotFound):
            call()


def test_alias_with_a_trailing_newline_is_refused(registry, trained):
    registry.register("line-7", trained().new, trained().model)
    with pytest.raises(InvalidInput):
        registry.set_alias("line-7", "production\n", 1)


def test_offsets_past_the_database_integer_give_empty_pages(registry, trained):
    registry.register("line-7", trained().new, trained().model)
    assert registry.list_models(offset=2**64, limit=10) == ([], 1)
    assert registry.list_versions("line-7", offset=2**64, limit=10) == ([], 1)
