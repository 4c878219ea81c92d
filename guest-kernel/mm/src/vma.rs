//! A process's virtual memory areas in an ordered tree (Linux keeps them in a maple tree; this
//! is an AVL tree over a fixed node pool, since the kernel records VMAs before it has a heap).
//!
//! `mmap` records an area here and returns its address without allocating RAM; the page-fault
//! handler later looks the faulting address up to decide between demand paging and SIGSEGV.

use core::fmt;

/// Access rights of an area, as `/proc/PID/maps` prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prot {
    pub read: bool,
    pub write: bool,
    pub exec: bool,
}

impl Prot {
    pub const R: Prot = Prot {
        read: true,
        write: false,
        exec: false,
    };
    pub const RW: Prot = Prot {
        read: true,
        write: true,
        exec: false,
    };
    pub const RX: Prot = Prot {
        read: true,
        write: false,
        exec: true,
    };

    /// From mmap's PROT_READ (1), PROT_WRITE (2), PROT_EXEC (4).
    pub const fn from_mmap(bits: u64) -> Prot {
        Prot {
            read: bits & 1 != 0,
            write: bits & 2 != 0,
            exec: bits & 4 != 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vma {
    pub start: u64,
    /// First address past the area.
    pub end: u64,
    pub prot: Prot,
}

impl Vma {
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }
}

/// `[0x716b326c8000, 0x716b326c9000) rw-p`
impl fmt::Display for Vma {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flag = |on: bool, c: char| if on { c } else { '-' };
        write!(
            f,
            "[{:#x}, {:#x}) {}{}{}p",
            self.start,
            self.end,
            flag(self.prot.read, 'r'),
            flag(self.prot.write, 'w'),
            flag(self.prot.exec, 'x')
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmaError {
    /// Start not below end, or not page-aligned.
    BadRange { start: u64, end: u64 },
    /// The new area overlaps an existing one.
    Overlap { new: Vma, existing: Vma },
    /// Every node of the pool is in use.
    Full { capacity: usize },
}

impl fmt::Display for VmaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadRange { start, end } => {
                write!(f, "[{start:#x}, {end:#x}) is not a page-aligned range")
            }
            Self::Overlap { new, existing } => write!(f, "{new} overlaps {existing}"),
            Self::Full { capacity } => write!(f, "all {capacity} VMA slots are in use"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Node {
    vma: Vma,
    left: Option<u16>,
    right: Option<u16>,
    height: u8,
}

/// An AVL tree of non-overlapping areas keyed by start address, holding at most `N`.
#[derive(Debug)]
pub struct VmaTree<const N: usize> {
    nodes: [Option<Node>; N],
    root: Option<u16>,
    len: usize,
}

impl<const N: usize> Default for VmaTree<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> VmaTree<N> {
    pub const fn new() -> Self {
        assert!(N <= u16::MAX as usize, "node indices are u16");
        Self {
            nodes: [None; N],
            root: None,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn node(&self, i: u16) -> &Node {
        self.nodes[usize::from(i)]
            .as_ref()
            .expect("tree links point at live nodes")
    }

    fn node_mut(&mut self, i: u16) -> &mut Node {
        self.nodes[usize::from(i)]
            .as_mut()
            .expect("tree links point at live nodes")
    }

    fn height(&self, i: Option<u16>) -> u8 {
        i.map_or(0, |i| self.node(i).height)
    }

    /// The area containing `addr`.
    pub fn find(&self, addr: u64) -> Option<Vma> {
        let mut cursor = self.root;
        while let Some(i) = cursor {
            let node = self.node(i);
            if node.vma.contains(addr) {
                return Some(node.vma);
            }
            cursor = if addr < node.vma.start {
                node.left
            } else {
                node.right
            };
        }
        None
    }

    /// The first area that overlaps `[start, end)`.
    pub fn first_overlap(&self, start: u64, end: u64) -> Option<Vma> {
        self.iter().find(|v| v.start < end && start < v.end)
    }

    /// Record `vma`; refuses overlaps, so the tree always describes a valid address space.
    pub fn insert(&mut self, vma: Vma) -> Result<(), VmaError> {
        if vma.start >= vma.end || !vma.start.is_multiple_of(4096) || !vma.end.is_multiple_of(4096)
        {
            return Err(VmaError::BadRange {
                start: vma.start,
                end: vma.end,
            });
        }
        if let Some(existing) = self.first_overlap(vma.start, vma.end) {
            return Err(VmaError::Overlap { new: vma, existing });
        }
        let slot = self
            .nodes
            .iter()
            .position(Option::is_none)
            .ok_or(VmaError::Full { capacity: N })?;
        self.nodes[slot] = Some(Node {
            vma,
            left: None,
            right: None,
            height: 1,
        });
        let slot = slot as u16;
        self.root = Some(self.insert_at(self.root, slot));
        self.len += 1;
        Ok(())
    }

    fn insert_at(&mut self, at: Option<u16>, new: u16) -> u16 {
        let Some(i) = at else { return new };
        if self.node(new).vma.start < self.node(i).vma.start {
            let left = self.insert_at(self.node(i).left, new);
            self.node_mut(i).left = Some(left);
        } else {
            let right = self.insert_at(self.node(i).right, new);
            self.node_mut(i).right = Some(right);
        }
        self.rebalance(i)
    }

    fn update(&mut self, i: u16) {
        let h = 1 + self
            .height(self.node(i).left)
            .max(self.height(self.node(i).right));
        self.node_mut(i).height = h;
    }

    fn balance(&self, i: u16) -> i16 {
        i16::from(self.height(self.node(i).left)) - i16::from(self.height(self.node(i).right))
    }

    fn rotate_right(&mut self, i: u16) -> u16 {
        let l = self
            .node(i)
            .left
            .expect("a left-heavy node has a left child");
        self.node_mut(i).left = self.node(l).right;
        self.node_mut(l).right = Some(i);
        self.update(i);
        self.update(l);
        l
    }

    fn rotate_left(&mut self, i: u16) -> u16 {
        let r = self
            .node(i)
            .right
            .expect("a right-heavy node has a right child");
        self.node_mut(i).right = self.node(r).left;
        self.node_mut(r).left = Some(i);
        self.update(i);
        self.update(r);
        r
    }

    fn rebalance(&mut self, i: u16) -> u16 {
        self.update(i);
        let balance = self.balance(i);
        if balance > 1 {
            let l = self.node(i).left.expect("left-heavy");
            if self.balance(l) < 0 {
                let new_l = self.rotate_left(l);
                self.node_mut(i).left = Some(new_l);
            }
            return self.rotate_right(i);
        }
        if balance < -1 {
            let r = self.node(i).right.expect("right-heavy");
            if self.balance(r) > 0 {
                let new_r = self.rotate_right(r);
                self.node_mut(i).right = Some(new_r);
            }
            return self.rotate_left(i);
        }
        i
    }

    /// The tree's height (1 for a single node): stays logarithmic in `len`.
    pub fn depth(&self) -> u8 {
        self.height(self.root)
    }

    /// Areas in address order.
    pub fn iter(&self) -> Iter<'_, N> {
        let mut iter = Iter {
            tree: self,
            stack: [0; 24],
            top: 0,
        };
        iter.push_left(self.root);
        iter
    }

    /// Where a top-down `mmap` of `size` bytes goes: the highest page-aligned gap that ends at
    /// or below `ceiling` and starts at or above `floor` (Linux's default layout).
    pub fn find_gap_top_down(&self, size: u64, floor: u64, ceiling: u64) -> Option<u64> {
        let size = size.checked_next_multiple_of(4096)?;
        let mut top = ceiling & !0xfff;
        // Walk areas from the highest down, trying the gap above each.
        let mut areas: [Option<Vma>; N] = [None; N];
        for (slot, vma) in areas.iter_mut().zip(self.iter()) {
            *slot = Some(vma);
        }
        for vma in areas.iter().rev().flatten() {
            if vma.start >= top {
                top = top.min(vma.start);
                continue;
            }
            if vma.end <= top && top - vma.end >= size {
                return Some(top - size).filter(|&s| s >= floor);
            }
            top = top.min(vma.start);
        }
        top.checked_sub(size).filter(|&s| s >= floor)
    }
}

#[derive(Debug)]
pub struct Iter<'a, const N: usize> {
    tree: &'a VmaTree<N>,
    /// AVL height is at most 1.44·log2(N+2); 24 levels cover any u16-sized pool.
    stack: [u16; 24],
    top: usize,
}

impl<const N: usize> Iter<'_, N> {
    fn push_left(&mut self, mut at: Option<u16>) {
        while let Some(i) = at {
            self.stack[self.top] = i;
            self.top += 1;
            at = self.tree.node(i).left;
        }
    }
}

impl<const N: usize> Iterator for Iter<'_, N> {
    type Item = Vma;

    fn next(&mut self) -> Option<Vma> {
        if self.top == 0 {
            return None;
        }
        self.top -= 1;
        let node = *self.tree.node(self.stack[self.top]);
        self.push_left(node.right);
        Some(node.vma)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::string::ToString;
    use std::vec::Vec;

    fn vma(start: u64, end: u64) -> Vma {
        Vma {
            start,
            end,
            prot: Prot::RW,
        }
    }

    const MMAP_BASE: u64 = 0x716b_326c_9000;

    #[test]
    fn seed_004_mmap_lands_one_page_below_the_mmap_base() {
        let mut tree = VmaTree::<8>::new();
        tree.insert(vma(0x5555_0000_0000, 0x5555_0000_1000))
            .unwrap();
        tree.insert(vma(0x7ffc_0000_0000, 0x7ffc_0000_2000))
            .unwrap();
        let start = tree
            .find_gap_top_down(4096, 0x1000_0000, MMAP_BASE)
            .unwrap();
        assert_eq!(start, 0x716b_326c_8000);
        tree.insert(vma(start, start + 4096)).unwrap();
        assert_eq!(
            tree.find(0x716b_326c_8100).unwrap().to_string(),
            "[0x716b326c8000, 0x716b326c9000) rw-p"
        );
        assert_eq!(tree.find(0x716b_326c_9100), None);
        // The next mapping goes right below the first.
        assert_eq!(
            tree.find_gap_top_down(8192, 0x1000_0000, MMAP_BASE),
            Some(0x716b_326c_6000)
        );
    }

    #[test]
    fn overlapping_and_malformed_areas_are_refused() {
        let mut tree = VmaTree::<4>::new();
        tree.insert(vma(0x1000, 0x3000)).unwrap();
        assert!(matches!(
            tree.insert(vma(0x2000, 0x4000)),
            Err(VmaError::Overlap { .. })
        ));
        assert!(matches!(
            tree.insert(vma(0x5000, 0x5000)),
            Err(VmaError::BadRange { .. })
        ));
        assert!(matches!(
            tree.insert(vma(0x5001, 0x6000)),
            Err(VmaError::BadRange { .. })
        ));
        tree.insert(vma(0x3000, 0x4000)).unwrap();
        assert_eq!(tree.len(), 2);
    }

    #[test]
    fn a_full_pool_is_an_error_not_a_panic() {
        let mut tree = VmaTree::<2>::new();
        tree.insert(vma(0x1000, 0x2000)).unwrap();
        tree.insert(vma(0x2000, 0x3000)).unwrap();
        assert_eq!(
            tree.insert(vma(0x3000, 0x4000)),
            Err(VmaError::Full { capacity: 2 })
        );
    }

    #[test]
    fn ascending_inserts_stay_balanced_and_ordered() {
        let mut tree = VmaTree::<1024>::new();
        for i in 0..1000u64 {
            tree.insert(vma(i * 0x2000, i * 0x2000 + 0x1000)).unwrap();
        }
        assert!(tree.depth() <= 15, "depth {}", tree.depth());
        let starts: Vec<u64> = tree.iter().map(|v| v.start).collect();
        assert_eq!(starts.len(), 1000);
        assert!(starts.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(tree.find(0x2000 * 777 + 0x800).unwrap().start, 0x2000 * 777);
        assert_eq!(tree.find(0x2000 * 777 + 0x1800), None);
    }

    #[test]
    fn no_gap_below_the_floor() {
        let mut tree = VmaTree::<4>::new();
        tree.insert(vma(0x10_0000, 0x20_0000)).unwrap();
        assert_eq!(tree.find_gap_top_down(0x1000, 0x10_0000, 0x20_0000), None);
        assert_eq!(
            tree.find_gap_top_down(0x1000, 0x1000, 0x20_0000),
            Some(0xf_f000)
        );
        assert_eq!(tree.find_gap_top_down(u64::MAX, 0, 0x20_0000), None);
    }
}
