"""Process-level tests of bert_nb.hub: cut-off downloads, two processes at once, offline use, ETag changes, unsafe archives.

Every test talks to a `HubServer` on 127.0.0.1 and keeps its cache under tmp_path; HOME is moved there too, so nothing
can land in the real ~/.cache.
"""
import io, json, logging, os, subprocess, sys, tarfile, threading, time, zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))  # a checkout without `pip install -e .`

from bert_nb import hub
from bert_nb.hub import (HubDownloadError, cached_path, extract_archive, file_lock, hub_url, resolve_pretrained_file,
                         serve_directory, url_to_filename)


@pytest.fixture(autouse=True)
def env(tmp_path, monkeypatch):
    for k in ('BERT_NB_OFFLINE', 'HF_HUB_OFFLINE', 'HF_ENDPOINT', 'BERT_NB_ENDPOINT', 'PYTORCH_PRETRAINED_BERT_CACHE'):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv('HOME', str(tmp_path/'home'))
    monkeypatch.setenv('BERT_NB_CACHE', str(tmp_path/'cache'))
    monkeypatch.setenv('BERT_NB_NO_PROGRESS', '1')
    return tmp_path/'cache'


@pytest.fixture
def server(tmp_path, monkeypatch):
    with serve_directory(tmp_path/'hub') as srv:
        monkeypatch.setenv('BERT_NB_ENDPOINT', srv.url)
        yield srv


def cache_files(cache):
    "Everything in the cache except lock files."
    return sorted(p.name for p in Path(cache).iterdir() if not p.name.endswith('.lock')) if Path(cache).exists() else []


def test_cut_off_download_leaves_nothing_then_retry_succeeds(server, env):
    data = os.urandom(300_000)
    url = server.add('bert-base-uncased', 'pytorch_model.bin', data)
    server.cut_off(url)
    with pytest.raises(HubDownloadError, match='got 150000 of 300000 bytes') as e: cached_path(url)
    assert url in str(e.value)
    assert cache_files(env) == []  # no file under the final name, no temp file, no sidecar
    server.cut_off(url, on=False)
    path = cached_path(url)
    assert Path(path).read_bytes() == data
    assert cache_files(env) == sorted([Path(path).name, Path(path).name + '.json'])
    assert server.count('GET', url) == 2


def test_two_processes_download_once(server, env):
    data = os.urandom(3 << 20)
    url = server.add('bert-base-cased', 'pytorch_model.bin', data)
    server.chunk_delay = 0.05  # 48 chunks of 64 KiB: ~2.4 s, so the second process arrives mid-download
    code = 'import sys; from bert_nb.hub import cached_path; print(cached_path(sys.argv[1]))'
    penv = {**os.environ, 'PYTHONPATH': os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')]))}
    procs = [subprocess.Popen([sys.executable, '-c', code, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=penv) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    paths = [out.strip().splitlines()[-1] for out, _ in outs]
    assert paths[0] == paths[1]
    assert Path(paths[0]).parent == env
    assert Path(paths[0]).read_bytes() == data
    assert server.count('HEAD', url) == 2
    assert server.count('GET', url) == 1
    deadline = time.monotonic() + 5  # the server thread stamps a request's end just after its last write
    while any(end is None for *_, end in server.log) and time.monotonic() < deadline: time.sleep(0.01)
    (get_end,) = [end for m, _, _, end in server.log if m == 'GET']
    assert all(start < get_end for m, _, start, _ in server.log if m == 'HEAD'), 'the processes did not overlap'
    assert cache_files(env) == sorted([Path(paths[0]).name, Path(paths[0]).name + '.json'])


def test_offline_uses_cache_and_fails_clearly_without_one(tmp_path, monkeypatch, caplog, env):
    with serve_directory(tmp_path/'hub') as srv:
        url = srv.add('bert-base-uncased', 'vocab.txt', 'hello\nworld\n')
        first = cached_path(url)
        with monkeypatch.context() as m:
            m.setenv('BERT_NB_OFFLINE', '1')
            assert cached_path(url) == first
        assert srv.count('HEAD', url) == 1  # offline mode asked the server nothing
    # the server is stopped: connection refused
    with caplog.at_level(logging.WARNING, logger='bert_nb.hub'):
        assert cached_path(url) == first
    assert 'using the cached copy' in caplog.text and url in caplog.text
    other = url.replace('vocab.txt', 'config.json')
    with pytest.raises(HubDownloadError) as e: cached_path(other)
    msg = str(e.value)
    assert other in msg and str(env) in msg and 'BERT_NB_ENDPOINT' in msg
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    empty = tmp_path/'empty-cache'
    with pytest.raises(OSError, match='offline mode') as e: cached_path(url, cache_dir=empty)
    assert url in str(e.value) and str(empty) in str(e.value)


def test_changed_etag_downloads_again(server):
    url = server.add('bert-base-uncased', 'config.json', '{"hidden_size": 768}')
    a = cached_path(url)
    assert cached_path(url) == a and server.count('GET', url) == 1
    server.add('bert-base-uncased', 'config.json', '{"hidden_size": 1024}')
    b = cached_path(url)
    assert b != a and server.count('GET', url) == 2
    assert Path(b).read_text() == '{"hidden_size": 1024}' and Path(a).read_text() == '{"hidden_size": 768}'
    meta = json.loads(Path(b + '.json').read_text())
    assert meta['url'] == url and meta['etag'] and Path(b).name == url_to_filename(url, meta['etag'])


def test_404_and_shortcut_names(server, tmp_path):
    url = server.add('bert-base-uncased', 'vocab.txt', '[PAD]\n')
    assert hub_url('bert-base-uncased', 'vocab.txt') == url
    assert Path(resolve_pretrained_file('bert-base-uncased', 'vocab.txt')).read_text() == '[PAD]\n'
    with pytest.raises(HubDownloadError, match='does not exist') as e: resolve_pretrained_file('bert-large-cased', 'vocab.txt')
    assert hub_url('bert-large-cased', 'vocab.txt') in str(e.value)
    with pytest.raises(FileNotFoundError, match='neither a shortcut name'): resolve_pretrained_file('bert-huge', 'vocab.txt')
    (tmp_path/'model').mkdir(); (tmp_path/'model'/'vocab.txt').write_text('x')
    with pytest.raises(FileNotFoundError, match='holds: vocab.txt'): resolve_pretrained_file(tmp_path/'model', 'config.json')


def test_lock_without_fcntl(tmp_path, monkeypatch):
    monkeypatch.setattr(hub, 'fcntl', None)
    lock, order = tmp_path/'x.lock', []
    def hold():
        with file_lock(lock): order.append('held'); time.sleep(0.3); order.append('released')
    t = threading.Thread(target=hold); t.start()
    while not order: time.sleep(0.01)
    with file_lock(lock): order.append('taken')
    t.join()
    assert order == ['held', 'released', 'taken'] and not lock.exists()


def make_tar(path, members):
    with tarfile.open(path, 'w:gz') as tf:
        for m in members:
            if isinstance(m, tarfile.TarInfo): tf.addfile(m); continue
            ti = tarfile.TarInfo(m[0]); ti.size = len(m[1]); tf.addfile(ti, io.BytesIO(m[1]))
    return path


def link(name, target, kind=tarfile.SYMTYPE):
    ti = tarfile.TarInfo(name); ti.type, ti.linkname = kind, target
    return ti


@pytest.mark.parametrize('member, why', [
    (('../evil', b'x'), "'../evil' has a '..' component"),
    (('model/../../evil', b'x'), "'model/../../evil' has a '..' component"),
    (('/tmp/bert_nb_evil', b'x'), "'/tmp/bert_nb_evil' has an absolute path"),
    (link('model/vocab.txt', '/etc/passwd'), "'model/vocab.txt' links outside the archive"),
    (link('model/vocab.txt', '../../secret'), "'model/vocab.txt' links outside the archive"),
    (link('model/hard', '../secret', tarfile.LNKTYPE), "'model/hard' links outside the archive"),
])
def test_extract_refuses_escaping_members(tmp_path, env, member, why):
    arc = make_tar(tmp_path/'bad.tar.gz', [('model/bert_config.json', b'{}'), member])
    with pytest.raises(ValueError, match='refusing to extract') as e: extract_archive(arc)
    assert why in str(e.value)
    assert not (tmp_path/'evil').exists() and not Path('/tmp/bert_nb_evil').exists()
    assert cache_files(env) == []  # nothing extracted, no temp folder left


def test_extract_refuses_device_files(tmp_path):
    dev = tarfile.TarInfo('model/null'); dev.type = tarfile.CHRTYPE
    with pytest.raises(ValueError, match="'model/null' is a device file"): extract_archive(make_tar(tmp_path/'dev.tar', [dev]))


def test_extract_seed_archive(tmp_path, env):
    files = [('bert-base-uncased/bert_config.json', b'{"hidden_size": 768}'), ('bert-base-uncased/pytorch_model.bin', b'\1' * 1000)]
    arc = make_tar(tmp_path/'bert-base-uncased.tar.gz', files)
    d = extract_archive(arc)
    assert Path(d).name == 'bert-base-uncased' and Path(d).parent.parent == env
    assert sorted(os.listdir(d)) == ['bert_config.json', 'pytorch_model.bin']
    assert (Path(d)/'pytorch_model.bin').read_bytes() == b'\1' * 1000
    mtime = (Path(d)/'bert_config.json').stat().st_mtime_ns
    assert extract_archive(arc) == d and (Path(d)/'bert_config.json').stat().st_mtime_ns == mtime  # not extracted twice
    assert [n for n in cache_files(env) if 'incomplete' in n] == []
    with zipfile.ZipFile(tmp_path/'flat.zip', 'w') as zf:  # a zip without a top folder
        zf.writestr('bert_config.json', '{}'); zf.writestr('pytorch_model.bin', b'\2' * 10)
    z = extract_archive(tmp_path/'flat.zip')
    assert z != d and sorted(os.listdir(z)) == ['bert_config.json', 'pytorch_model.bin']
    with zipfile.ZipFile(tmp_path/'evil.zip', 'w') as zf: zf.writestr('../evil', 'x')
    with pytest.raises(ValueError, match="'../evil'"): extract_archive(tmp_path/'evil.zip')


def test_atomic_write(tmp_path):
    "Moved from nbs/01a_hub.ipynb: text and bytes, permissions, a failed write leaves the old file, links, bad paths."
    from bert_nb.hub import _umask, atomic_open, atomic_write, check_writable
    d = tmp_path/'w'
    d.mkdir()
    assert Path(atomic_write(d/'a.txt', 'héllo')).read_text(encoding='utf-8') == 'héllo'
    atomic_write(d/'a.txt', b'\x00\x01')
    assert (d/'a.txt').read_bytes() == b'\x00\x01'
    assert oct((d/'a.txt').stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    with pytest.raises(TypeError, match="atomic_write writes str or a bytes-like object, not int"):
        atomic_write(d/'a.txt', 3)
    with pytest.raises(OSError, match='disk full'):
        with atomic_open(d/'a.txt') as f:
            f.write(b'half')
            raise OSError('disk full')
    assert sorted(p.name for p in d.iterdir()) == ['a.txt']  # the failed write left no temp file, the old file intact
    assert (d/'a.txt').read_bytes() == b'\x00\x01'
    (d/'link.txt').symlink_to(d/'a.txt')
    atomic_write(d/'link.txt', 'through the link')
    assert ((d/'link.txt').is_symlink(), (d/'a.txt').read_text()) == (True, 'through the link')
    with pytest.raises(OSError) as e:
        atomic_write(d/'no'/'such'/'f.txt', 'x')
    assert f"cannot write {d/'no'/'such'/'f.txt'}: no such directory" in str(e.value)
    with pytest.raises(OSError, match="cannot write"):
        check_writable(d/'a.txt'/'x')
