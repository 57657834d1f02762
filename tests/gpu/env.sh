# Sourced by the GPU scripts (run.sh, session.sh) with $dir set to a CUDA build directory or a
# pack.sh folder: unpacks the pack's executables in place and its libraries into a temporary
# folder, and puts those libraries and CUDA's on LD_LIBRARY_PATH. Leaves $dir pointing at the
# folder that holds the executables.
[ -d "$dir/gpu" ] && dir=$dir/gpu
if [ -f "$dir/bins.tar.xz" ] && [ ! -x "$dir/test_cuda_ops" ]; then # made by pack.sh
    tar -xJf "$dir/bins.tar.xz" -C "$dir" || exit 2
fi
if [ ! -x "$dir/test_cuda_ops" ]; then
    echo "tests/gpu: no test_cuda_ops in $dir (build with -DPLM_CUDA=ON first)" >&2
    exit 2
fi
libdir=
if [ -f "$dir/libs.tar.xz" ]; then
    libdir=$(mktemp -d)
    tar -xJf "$dir/libs.tar.xz" -C "$libdir" || exit 2
elif [ -f "$dir/libs.tar.gz" ]; then # packed before libs.tar.xz
    libdir=$(mktemp -d)
    tar -xzf "$dir/libs.tar.gz" -C "$libdir" || exit 2
elif [ -d "$dir/lib" ]; then
    libdir=$(cd "$dir/lib" && pwd)
fi
LD_LIBRARY_PATH=${libdir}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [ -d "$d" ] && LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$d
done
export LD_LIBRARY_PATH
if ldd "$dir/test_cuda_ops" | grep -q "libcublas.*not found"; then
    pipdir=$(python3 -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))' 2>/dev/null)
    [ -n "$pipdir" ] && export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$pipdir
fi

# cuDNN (bench_patch_embed only) from pip's nvidia-cudnn where the toolkit has none
if [ -x "$dir/bench_patch_embed" ] && ldd "$dir/bench_patch_embed" | grep -q "libcudnn.*not found"; then
    pipdir=$(python3 -c 'import nvidia.cudnn, os; print(os.path.join(list(nvidia.cudnn.__path__)[0], "lib"))' 2>/dev/null)
    [ -n "$pipdir" ] && export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$pipdir
fi
